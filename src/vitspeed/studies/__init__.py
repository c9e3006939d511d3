"""Chapter computations: each module holds what one notebook calls."""
