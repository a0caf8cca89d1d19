"""M2N2: training-free interactive segmentation from Stable Diffusion attention (Karmann & Urfalioglu, CVPR 2025)."""
from .config import DEFAULT_MODEL, M2N2Config
from .image_io import ImageError, load_image
from .predictor import M2N2Predictor, PreparedImage

__version__ = "0.1.0"
__all__ = ["M2N2Config", "M2N2Predictor", "PreparedImage", "ImageError", "load_image", "DEFAULT_MODEL", "__version__"]
