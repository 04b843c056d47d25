"""A causal task that writes its samples as lines of integers (the CLI test's fixture): the
synthetic task's data and head, plus `write_samples`."""
import os
import tempfile

from bytessm.tasks.synthetic import SyntheticTask


class SymbolTask(SyntheticTask):
    def write_samples(self, samples, out):
        text = "".join(" ".join(str(s) for s in sample) + "\n" for sample in samples)
        if out is None:
            print(text, end="")
            return []
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)))
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
        return [out]
