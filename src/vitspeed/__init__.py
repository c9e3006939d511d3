"""vitspeed: attention variants, FLOPs counting and latency measurement for the ViT inference study."""
import warnings as _warnings

__version__ = "0.1.0"

# tqdm.auto (imported by a dependency) warns in every Jupyter kernel without ipywidgets; the study's
# notebooks show no progress bars (TQDM_DISABLE), so the warning would only clutter the book
_warnings.filterwarnings("ignore", message="IProgress not found")
