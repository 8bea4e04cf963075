"""Model zoo, checkpoints and user-model loading."""

from nnslicer.models.checkpoint import (
    REQUIRED_META_KEYS,
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    state_dict_mismatch,
)
from nnslicer.models.loading import ModelLoadError, load_model, load_user_model, load_weights_into
from nnslicer.models.zoo import ARCHITECTURES, build_model

__all__ = [
    "ARCHITECTURES",
    "REQUIRED_META_KEYS",
    "CheckpointError",
    "ModelLoadError",
    "build_model",
    "checkpoint_paths",
    "load_checkpoint",
    "load_model",
    "load_user_model",
    "load_weights_into",
    "read_checkpoint_meta",
    "save_checkpoint",
    "state_dict_mismatch",
]
