"""guidance.sdxl: SDXL's micro-conditioning (the UNet's `add_time_ids`). Torch-free.

Read only when guidance.model is an SDXL pipeline (trainables/frozen/sdxl.py); an SD 1.x/2.x critic ignores it.
SDXL conditions its UNet on time_ids = original_size + crops_coords_top_left + target_size (each (height, width)),
as diffusers' StableDiffusionXLPipeline builds them; its defaults are the pipeline's for an image of the critic's
side: ((image_size, image_size), (0, 0), (image_size, image_size)).
"""
from __future__ import annotations

from trainables.settings import StrictModel


class SdxlConditioning(StrictModel):
    """guidance.sdxl: the six add_time_ids values of every SDXL UNet call."""

    original_size: tuple[int, int] | None = None               # (h, w); None = (image_size, image_size)
    crops_coords_top_left: tuple[int, int] = (0, 0)            # (top, left) of the (imagined) crop
    target_size: tuple[int, int] | None = None                 # (h, w); None = (image_size, image_size)

    def time_ids(self, image_size: int) -> tuple[int, int, int, int, int, int]:
        """original_size + crops_coords_top_left + target_size (diffusers' _get_add_time_ids order)."""
        side = (int(image_size), int(image_size))
        return (*(self.original_size or side), *self.crops_coords_top_left, *(self.target_size or side))
