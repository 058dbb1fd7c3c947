"""Checks and reshaping of what users pass in besides images and prompts: processor outputs
(``inputs=``, one row or a left-padded batch) and stop strings. Each problem is a one-line
vlmspec error naming the fix, raised before anything reaches the model."""

from __future__ import annotations

import torch

from .errors import InputError, PromptError
from .target import Target, left_padding_mask


def check_inputs(inputs, target: Target) -> None:
    """`inputs=`: one processor output (input_ids [1, prompt_len], optional attention_mask, pixel_values)."""
    vocab_size = target.vocab_size
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        raise InputError("inputs must be the processor's output: a dict with input_ids (and pixel_values).")
    ids = inputs["input_ids"]
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        shape = tuple(ids.shape) if torch.is_tensor(ids) else type(ids).__name__
        raise InputError(f"inputs['input_ids'] must be an integer tensor [1, prompt_len] (the processor's output "
                         f"with return_tensors='pt'); got {shape}.")
    if ids.shape[0] != 1:
        raise InputError(f"inputs hold a batch of {ids.shape[0]} sequences; pass one sequence per call "
                         "(or one (image, prompt) pair per sequence to generate_batch).")
    if ids.shape[1] == 0:
        raise PromptError("inputs['input_ids'] is empty; the prompt needs at least one token.")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise InputError(f"inputs['input_ids'] holds ids outside the model's vocabulary (0..{vocab_size - 1}); "
                         "were they made by another tokenizer?")
    mask = inputs.get("attention_mask")
    if mask is not None and (not torch.is_tensor(mask) or tuple(mask.shape) != tuple(ids.shape)):
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise InputError(f"inputs['attention_mask'] must have input_ids' shape {tuple(ids.shape)}; got {shape}.")
    pixels = inputs.get("pixel_values")
    if pixels is not None:
        side = getattr(getattr(target.model.config, "vision_config", None), "image_size", None)
        if not torch.is_tensor(pixels) or not pixels.dtype.is_floating_point or pixels.dim() not in (4, 5):
            shape = tuple(pixels.shape) if torch.is_tensor(pixels) else type(pixels).__name__
            raise InputError(f"inputs['pixel_values'] must be a float tensor [images, 3, H, W] (or [images, patches, "
                             f"3, H, W]) as the processor returns with return_tensors='pt'; got {shape}.")
        if side and tuple(pixels.shape[-2:]) != (side, side):
            raise InputError(f"inputs['pixel_values'] are {tuple(pixels.shape[-2:])} pixels but the vision tower "
                             f"takes {side}x{side}; make them with the target's own processor.")


def split_padded_batch(inputs, target: Target) -> list[dict]:
    """A left-padded processor batch -> one unpadded sample per row (its images with it).

    Positions and masks of real tokens are what model.generate computes for the padded batch,
    so each row's output is the same. Images: none, one per row, or (llava, fixed tokens per
    image) as many per row as its image tokens say; otherwise pass (image, prompt) pairs."""
    if not isinstance(inputs, dict) or "input_ids" not in inputs:
        raise InputError("inputs must be the processor's output: a dict with input_ids (and pixel_values).")
    ids = inputs["input_ids"]
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.shape[0] == 0:
        shape = tuple(ids.shape) if torch.is_tensor(ids) else type(ids).__name__
        raise InputError(f"inputs['input_ids'] must be an integer tensor [batch, prompt_len]; got {shape}.")
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    if not torch.is_tensor(mask) or mask.shape != ids.shape:
        raise InputError(f"inputs['attention_mask'] must have input_ids' shape {tuple(ids.shape)}.")
    rows = []
    for b in range(ids.shape[0]):
        left_padding_mask(mask[b : b + 1])  # right / inner padding refused with the fix
        keep = mask[b] != 0
        rows.append(ids[b : b + 1, keep])  # [1, real_len]
    per_row_images = images_per_row(inputs, rows, target)
    samples, start = [], 0
    for row, count in zip(rows, per_row_images):
        sample = {"input_ids": row, "attention_mask": torch.ones_like(row)}
        for key in ("pixel_values", "image_sizes"):
            if inputs.get(key) is not None and count:
                sample[key] = inputs[key][start : start + count]
        start += count
        check_inputs(sample, target)
        samples.append(sample)
    return samples


def images_per_row(inputs: dict, rows: list[torch.Tensor], target: Target) -> list[int]:
    pixels = inputs.get("pixel_values")
    tokens = [int((row == target.image_token_id).sum()) for row in rows]
    if pixels is None or not torch.is_tensor(pixels) or pixels.shape[0] == 0:
        return [0] * len(rows)
    images = pixels.shape[0]
    if images == len(rows) and all(tokens):
        return [1] * len(rows)
    total = sum(tokens)
    if target.model.config.model_type == "llava" and total and total % images == 0:
        per_image = total // images
        if all(t % per_image == 0 for t in tokens):
            return [t // per_image for t in tokens]
    raise InputError(
        f"Could not tell which of the {images} images in inputs['pixel_values'] belong to which of the {len(rows)} "
        "rows; pass (image, prompt) pairs to generate_batch instead."
    )


def stop_strings(stop) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings: one string is one stop string (not its characters)."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(x, str) for x in stop):
        raise InputError(f"stop must be a string or a list of strings, got {stop!r}.")
    if any(x == "" for x in stop):
        raise InputError("stop contains an empty string, which would match at once; remove it.")
    return tuple(stop)
