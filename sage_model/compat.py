"""One CLIP for features, teacher texts and model: the check, written once.

Region features live in the embedding space of the CLIP that extracted them, and the teacher's
descriptions are encoded by that CLIP's text tower; the model's classifier comes from its own
CLIP's text tower. With another CLIP everything still runs (a Linear quietly maps 512-d features
to the tiny CLIP's 64 dimensions) and the numbers mean nothing. Every store records the CLIP that
made it as ``feature_model`` (``teacher_model.text_encoder`` for teachers); :func:`check_clip_matches`
compares it with the model's :func:`sage_model.clip.clip_identity` and refuses a mismatch with one
line that names both fingerprints and the fix. The run's driver calls it before any trial starts
(``harness.preflight``) and every trial again (``run_experiment``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class FeatureStoreLike(Protocol):
    @property
    def path(self) -> Path: ...

    @property
    def manifest(self) -> dict[str, Any]: ...

    @property
    def feature_dim(self) -> int: ...


def describe(identity: Mapping[str, Any], width: int | None = None) -> str:
    """``sage_vitb16 (ViT-B-16.pt, fingerprint 1a2b.., 512-d)`` from a recorded identity."""
    name = str(identity.get("name", "unknown"))
    if identity.get("class_semantics"):
        name += f" of {identity['class_semantics']}"
    parts = [str(identity["checkpoint"])] if identity.get("checkpoint") else []
    parts.append(f"fingerprint {identity.get('fingerprint')}")
    dim = width if width is not None else identity.get("embed_dim")
    if dim is not None:
        parts.append(f"{dim}-d")
    return f"{name} ({', '.join(parts)})"


def clip_mismatch(model: Mapping[str, Any], data: Mapping[str, Any], width: int | None) -> str | None:
    """What differs between the model's CLIP and the one recorded with data of ``width`` (None: nothing)."""
    if data.get("fingerprint") != model["fingerprint"]:
        return "fingerprint"
    if width is not None and width != model["embed_dim"]:
        return "width"
    if "quick_gelu" in data and bool(data["quick_gelu"]) != bool(model["quick_gelu"]):
        return "activation"
    return None


def _fix(kind: str, model: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    wanted = data.get("fingerprint")
    if kind == "activation":
        value = str(bool(data["quick_gelu"])).lower()
        return f"run with --set model.clip_quick_gelu={value} (the activation the features were made with)"
    if kind == "width":
        return (
            "make the data with the CLIP the model uses (harness data synth --clip-checkpoint CKPT, then run "
            f"with the same --clip-checkpoint; or --feature-dim {model['embed_dim']} for {model.get('name')})"
        )
    if data.get("name") == "sage_tiny" or data.get("class_semantics") == "sage_tiny":
        return "run without --clip-checkpoint (model.preset: sage_tiny), the CLIP that made them"
    if model.get("checkpoint") is None:
        return f"pass --clip-checkpoint with the checkpoint that made them (fingerprint {wanted})"
    return (
        f"pass the --clip-checkpoint that made them (fingerprint {wanted}) instead of {model['checkpoint']}, "
        "or extract the features again with this one"
    )


def check_clip_matches(
    model: Mapping[str, Any], store: FeatureStoreLike, teacher: Any | None = None, *, field: str = "data.root"
) -> None:
    """Raise ``ValueError`` (one line) unless the store and the teacher were made with the model's CLIP.

    ``teacher`` is a ``TeacherStore`` (or None); synthetic teachers record no text encoder and
    are checked through their feature store only.
    """
    recorded = store.manifest.get("feature_model", {})
    kind = clip_mismatch(model, recorded, store.feature_dim)
    if kind is not None:
        raise ValueError(
            f"{field}: {store.path} holds features of CLIP {describe(recorded, store.feature_dim)} but the "
            f"model's CLIP is {describe(model)}; {_fix(kind, model, recorded)}"
        )
    encoder = (
        (teacher.manifest.get("teacher_model") or {}).get("text_encoder") if teacher is not None else None
    )
    if encoder:
        kind = clip_mismatch(model, encoder, None)
        if kind is not None:
            raise ValueError(
                f"data.teacher: {teacher.path} holds texts encoded by CLIP {describe(encoder)} but the "  # type: ignore[union-attr]
                f"model's CLIP is {describe(model)}; {_fix(kind, model, encoder)}"
            )
