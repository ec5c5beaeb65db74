"""attnviz: AttentionViz for every attention head, from Python.

Queries and keys of every head projected jointly (t-SNE, UMAP, PCA) into layouts that show
attention faithfully, stored as Parquet datasets, shown in an interactive viewer, in a notebook too.
The work is done by the attnviz Rust libraries (this package's native module); the ``attnviz``
command of this package is the same program as the Rust binary.

- Layouts of arrays: :func:`project`, scored by :func:`fidelity`, :func:`quality` /
  :func:`trustworthiness`, against a head's :func:`ceiling`.
- Datasets: :func:`run` / :func:`extract` (a model directory the Rust loader knows: BERT, GPT-2,
  ViT, Llama, Mistral, Qwen2, Qwen3), :func:`capture` (any Hugging Face transformers model in memory,
  through its attention functions; needs torch), :func:`from_activation_cache` (TransformerLens),
  :func:`import_vectors` (arrays computed elsewhere); :func:`open` -> :class:`Dataset`, whose tables
  come back as pyarrow (pandas, polars) and whose :meth:`Dataset.show` puts the viewer in a notebook.

Errors are :class:`AttnvizError` (a ``ValueError``) with one line naming the file, argument, tensor
or field at fault. Long calls release the GIL, report progress (tqdm when installed) and stop on
Ctrl-C, keeping what they finished.
"""

from ._attnviz import AttnvizError, __version__
from .capture import Captured, capture, capture_vectors
from .dataset import Dataset, View, open
from .lens import from_activation_cache
from .pipeline import default_model_dir, extract, import_vectors, run
from .projection import ceiling, fidelity, project, quality, trustworthiness

__all__ = [
    "AttnvizError",
    "Captured",
    "Dataset",
    "View",
    "__version__",
    "capture",
    "capture_vectors",
    "ceiling",
    "default_model_dir",
    "extract",
    "fidelity",
    "from_activation_cache",
    "import_vectors",
    "open",
    "project",
    "quality",
    "run",
    "trustworthiness",
]
