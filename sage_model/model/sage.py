"""SageModel: the three SAGE parts assembled, with the two training stages made explicit.

Data flow for a batch of B subject-object pairs at T keyframes::

    visual (B,T,4,D) --proj--> (B,T,4,H) --(I) semantic enhancement (teacher (B,T,4,Dt))-->
    --(II) motion + spatial + temporal--> V_vr (B,4H) --proj--> (B,E) [visual adapter]
                                        \\-> psi -> interaction logit (B,)
                                        \\-> subject/object (B,2,H) -> cos with W_obj -> object logits
    (III) class enhancement: prompts + TKE -> CLIP text encoder -> F'_L (C,E) [text adapter]
    relation logits = cos(V_vr, F'_L) / tau   (B, C)

Stages: in stage 1 the classifier is the frozen class embedding ``W_clip`` (the TKE input and
the L_kg target) and only the visual modules learn; in stage 2 the visual modules are frozen (and in eval mode, so dropout does not
move their features) and the prompt learner and adapters learn. Without class enhancement
(``prompt.strategy: none``) the classifier is the frozen hand-crafted template
``"<template_text> <name>."`` in both stages. :meth:`SageModel.set_stage` is the one place
where parameters are frozen.

Teacher at test time (``semantic.at_test``, docs/model.md): with ``teacher`` every pass reads the
batch's teacher features; with ``none`` every pass but stage-1 training uses the learnt
no-teacher tokens ``null_teacher (4, H)``, which stage 1 also substitutes for a pair's teacher
with probability ``semantic.teacher_dropout``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import Tensor, nn

from sage_model.clip import build_clip, encode_texts
from sage_model.config import ModelConfig
from sage_model.model.heads import Adapter, InteractionHead
from sage_model.model.prompts import (
    ClassAwarePrompt,
    ImageCondPrompt,
    LayerwiseTextEncoder,
    class_sentences,
)
from sage_model.model.semantic import SemanticEnhancement
from sage_model.model.spatiotemporal import SpatioTemporal

DEFAULT_BLOCKS = {"vidvrd": 1, "vidor": 2}


class VocabularyLike(Protocol):
    @property
    def dataset(self) -> str: ...

    @property
    def objects(self) -> tuple[str, ...]: ...

    @property
    def predicates(self) -> tuple[str, ...]: ...


@dataclass
class ModelOutput:
    """What one forward pass returns; C = requested predicates, O = requested objects."""

    rel_logits: Tensor  # (B, C) cos / tau
    int_logit: Tensor  # (B,)
    subject_logits: Tensor  # (B, O) cos / tau
    object_logits: Tensor  # (B, O)
    classifier: Tensor  # (C, E) or (B, C, E) for image_cond; L2-normalised F'_L
    knowledge: Tensor  # (C, E) W_clip of the requested predicates


def _input_projection(in_dim: int, dim: int) -> nn.Module:
    """Linear to the model width (none when the store already has it), then LayerNorm.

    The LayerNorm puts region and teacher tokens on the scale of the transformer's own
    activations whatever the norm of the stored features (CLIP image embeddings are ~10, the
    synthetic ones ~1); on the synthetic data it halves the epochs stage 1 needs.
    """
    project = nn.Identity() if in_dim == dim else nn.Linear(in_dim, dim)
    return nn.Sequential(project, nn.LayerNorm(dim))


class SageModel(nn.Module):
    knowledge: Tensor  # (P, E) W_clip buffer
    object_text: Tensor  # (O, E) W_obj buffer
    handcrafted: Tensor  # (P, E) hand-crafted template classifier (strategy 'none' only)
    def __init__(
        self,
        cfg: ModelConfig,
        clip: CLIP,
        predicates: list[str],
        objects: list[str],
        *,
        feature_dim: int,
        teacher_dim: int | None,
        frames: int,
        blocks: int,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.stage = 1
        self.predicates = list(predicates)
        self.objects = list(objects)
        self.text_encoder = LayerwiseTextEncoder(clip)
        embed = self.text_encoder.embed_dim
        dim = cfg.hidden_dim or embed
        self.tau = cfg.loss.tau  # relation logits
        self.object_tau = cfg.loss.effective_object_tau  # object logits
        knowledge = encode_texts(clip, class_sentences(self.predicates, cfg.class_template))
        self.register_buffer("knowledge", knowledge, persistent=False)  # W_clip (P, E)
        object_text = encode_texts(clip, class_sentences(self.objects, cfg.class_template))
        self.register_buffer("object_text", object_text, persistent=False)  # W_obj (O, E)
        # (I) + (II): the visual modules of stage 1.
        self.visual_in = _input_projection(feature_dim, dim)
        uses_teacher = cfg.semantic.fusion != "none"
        self.teacher_in = _input_projection(teacher_dim or dim, dim) if uses_teacher else None
        # The learnt "no teacher" tokens, one per perspective: what a pair sees instead of teacher
        # features when they are dropped in training or absent at test (semantic.at_test: none).
        # Zero init draws no random numbers, so models without them initialise as before.
        needs_null = uses_teacher and (
            cfg.semantic.at_test == "none" or cfg.semantic.effective_teacher_dropout > 0
        )
        self.null_teacher = nn.Parameter(torch.zeros(4, dim)) if needs_null else None  # (4, H)
        self.semantic = SemanticEnhancement(cfg.semantic, dim)
        self.spatio_temporal = SpatioTemporal(cfg.spatio_temporal, dim, blocks, frames)
        self.interaction = InteractionHead(4 * dim, dim)
        self.object_proj = nn.Linear(dim, embed)
        self.relation_proj = nn.Linear(4 * dim, embed)
        # (III): the class-enhancement modules of stage 2.
        self.prompt: ClassAwarePrompt | ImageCondPrompt | None = None
        if cfg.prompt.strategy == "class_aware":
            self.prompt = ClassAwarePrompt(cfg.prompt, self.text_encoder, self.predicates, knowledge)
        elif cfg.prompt.strategy == "image_cond":
            self.prompt = ImageCondPrompt(cfg.prompt, self.text_encoder, self.predicates, 4 * dim)
        elif cfg.prompt.strategy == "none":
            sentences = class_sentences(self.predicates, cfg.prompt.template_text + " {}.")
            self.register_buffer("handcrafted", encode_texts(clip, sentences), persistent=False)  # (P, E)
        ad = cfg.adapters
        self.visual_adapter = Adapter(embed, ad.reduction, ad.ratio) if ad.visual else None
        self.text_adapter = Adapter(embed, ad.reduction, ad.ratio) if ad.text else None
        self._cache: dict[tuple[int, tuple[int, ...]], Tensor] = {}
        self.set_stage(1)

    # ----------------------------------------------------------------- stages and freezing
    def visual_modules(self) -> list[nn.Module]:
        mods = [self.visual_in, self.semantic, self.spatio_temporal, self.interaction]
        mods += [self.object_proj, self.relation_proj]
        return mods + ([self.teacher_in] if self.teacher_in is not None else [])

    def visual_parameters(self) -> list[nn.Parameter]:
        """Parameters stage 1 trains that belong to no module of :meth:`visual_modules`."""
        return [self.null_teacher] if self.null_teacher is not None else []

    def class_modules(self) -> list[nn.Module]:
        mods: list[nn.Module | None] = [self.prompt, self.visual_adapter, self.text_adapter]
        return [m for m in mods if m is not None]

    def set_stage(self, stage: int) -> None:
        """Freeze everything, then unfreeze what ``stage`` trains (the CLIP text tower never)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.stage = stage
        self._cache.clear()
        for param in self.parameters():
            param.requires_grad_(False)
        for module in self.visual_modules() if stage == 1 else self.class_modules():
            for param in module.parameters():
                param.requires_grad_(True)
        if stage == 1:
            for param in self.visual_parameters():
                param.requires_grad_(True)
        if self.prompt is not None and not self.prompt.context.trainable:
            self.prompt.context.vectors.requires_grad_(False)  # the 'fixed' init stays frozen
        self.train(self.training)

    def stage_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> SageModel:
        """Train/eval mode; the CLIP text tower always evaluates, stage 2 also the visual modules.

        Entering training drops the cached classifiers (parameters are about to change); eval
        after eval keeps them, so repeated inference passes share one classifier.
        """
        super().train(mode)
        self.text_encoder.eval()
        if self.stage == 2:
            for module in self.visual_modules():
                module.eval()
        if mode:
            self._cache.clear()
        return self

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """``.to()``/``.cuda()``/``.half()`` go through here: cached classifiers would stay behind."""
        self._cache.clear()
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        self._cache.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ----------------------------------------------------------------------- the two sides
    def encode_pairs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """V_vr (B, 4H) and subject/object features (B, 2, H) of a batch."""
        tokens = self.visual_in(batch["visual"].float())  # (B, T, 4, H)
        teacher = self.teacher_tokens(batch, tokens) if self.teacher_in is not None else None
        tokens = self.semantic(tokens, teacher)
        return self.spatio_temporal(tokens, batch["boxes"].float())

    @property
    def trains_visual(self) -> bool:
        """Stage 1 in training mode: the only time the visual path (and teacher dropout) learns."""
        return self.training and self.stage == 1

    def teacher_tokens(self, batch: dict[str, Tensor], tokens: Tensor) -> Tensor:
        """Teacher tokens (B, T, 4, H): the projected teacher features, or the no-teacher tokens.

        ``semantic.at_test: none``: every pass except stage-1 training uses the no-teacher tokens
        (stage 2 trains the classifier on the features the test will see), and the batch's
        teacher is not read. Stage-1 training replaces a pair's teacher by them with probability
        ``semantic.teacher_dropout``.
        """
        if self.null_teacher is not None and self.cfg.semantic.at_test == "none" and not self.trains_visual:
            return self.null_teacher.expand_as(tokens)
        has = batch.get("has_teacher")
        if batch.get("teacher") is None or (has is not None and not bool(has.all())):
            raise ValueError(
                f"model.semantic.fusion={self.cfg.semantic.fusion!r} needs a teacher artifact; "
                "use data.teacher with an existing teacher, model.semantic.fusion: none, or "
                "model.semantic.at_test: none (test pairs without teacher)"
            )
        assert self.teacher_in is not None, "teacher_tokens is only called when the model fuses a teacher"
        teacher = self.teacher_in(batch["teacher"].float())  # (B, T, 4, H)
        rate = self.cfg.semantic.effective_teacher_dropout
        if self.null_teacher is not None and self.trains_visual and rate > 0:
            dropped = torch.rand(teacher.shape[0], device=teacher.device) < rate  # (B,)
            teacher = torch.where(dropped[:, None, None, None], self.null_teacher.to(teacher.dtype), teacher)
        return teacher

    def classifier(self, classes: Tensor, v_vr: Tensor | None = None) -> Tensor:
        """L2-normalised F'_L of ``classes``: (C, E), or (B, C, E) for image_cond in stage 2.

        Class-aware (and fixed) classifiers depend on the vocabulary only: outside training and
        autograd they are computed once per (stage, class list) and cached, so inference cost
        does not grow with the number of pairs.
        """
        per_instance = self.stage == 2 and isinstance(self.prompt, ImageCondPrompt)
        cacheable = not per_instance and not self.training and not torch.is_grad_enabled()
        key = (self.stage, tuple(classes.tolist())) if cacheable else None  # tolist: a host sync
        if key is not None and key in self._cache:
            return self._cache[key]
        if self.prompt is None:  # w/o CE: the hand-crafted template, in both stages
            text = self.handcrafted[classes]
        elif self.stage == 1:
            text = self.knowledge[classes]
        elif isinstance(self.prompt, ClassAwarePrompt):
            text = self.prompt(self.text_encoder, classes)
        else:
            assert v_vr is not None, "image_cond needs the pair features"
            text = self.prompt(self.text_encoder, classes, v_vr)
        if self.stage == 2 and self.text_adapter is not None:
            text = self.text_adapter(text)
        text = F.normalize(text.float(), dim=-1)
        if key is not None:
            self._cache[key] = text
        return text

    def relation_features(self, v_vr: Tensor) -> Tensor:
        """V_vr projected to the text embedding space (and adapted in stage 2), L2-normalised."""
        rel = self.relation_proj(v_vr)
        if self.stage == 2 and self.visual_adapter is not None:
            rel = self.visual_adapter(rel)
        return F.normalize(rel.float(), dim=-1)

    def forward(
        self, batch: dict[str, Tensor], predicate_classes: Tensor, object_classes: Tensor
    ) -> ModelOutput:
        v_vr, objects = self.encode_pairs(batch)
        rel = self.relation_features(v_vr)  # (B, E)
        classifier = self.classifier(predicate_classes, v_vr)
        if classifier.dim() == 2:
            rel_logits = rel @ classifier.t() / self.tau  # (B, C)
        else:
            rel_logits = torch.einsum("be,bce->bc", rel, classifier) / self.tau
        obj = F.normalize(self.object_proj(objects).float(), dim=-1)  # (B, 2, E)
        obj_logits = obj @ self.object_text[object_classes].t() / self.object_tau  # (B, 2, O)
        return ModelOutput(
            rel_logits=rel_logits,
            int_logit=self.interaction(v_vr).float(),
            subject_logits=obj_logits[:, 0],
            object_logits=obj_logits[:, 1],
            classifier=classifier,
            knowledge=self.knowledge[predicate_classes],
        )

    def parameter_count(self, *, token_embedding: bool = True) -> int:
        """All parameters of the inference model (frozen CLIP text tower included).

        ``token_embedding=False`` leaves out CLIP's token embedding table (vocabulary x width:
        25.3 M of ViT-B/16's text tower), a lookup table rather than computation; the paper's
        Table 10 count (55.64 M) most likely leaves it out.
        """
        total = sum(p.numel() for p in self.parameters())
        if token_embedding:
            return total
        return total - sum(p.numel() for p in self.text_encoder.token_embedding.parameters())

    def trainable_state(self) -> dict[str, Tensor]:
        """State without the frozen CLIP text tower (rebuilt from the preset on load)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`trainable_state`; any other missing or unexpected key is an error."""
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("text_encoder.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"state does not fit the model: missing {missing}, unexpected {result.unexpected_keys}"
            )


def build_model(
    cfg: ModelConfig,
    vocab: VocabularyLike,
    feature_dim: int,
    *,
    teacher_dim: int | None = None,
    frames: int | None = None,
    clip: CLIP | None = None,
    predicates: list[str] | None = None,
    objects: list[str] | None = None,
) -> SageModel:
    """The SAGE model for ``vocab`` on features of width ``feature_dim`` (D of the store).

    ``frames`` is the store's T (default: the temporal window); ``clip`` lets callers share one
    CLIP instance (default: built from ``cfg.preset`` / ``cfg.clip_checkpoint``). ``predicates``
    / ``objects`` widen the class lists beyond ``vocab`` (cross-dataset testing); they must start
    with ``vocab``'s own lists so that its base classes stay an index prefix.
    """
    predicates = list(predicates) if predicates is not None else list(vocab.predicates)
    objects = list(objects) if objects is not None else list(vocab.objects)
    if predicates[: len(vocab.predicates)] != list(vocab.predicates) or objects[: len(vocab.objects)] != list(
        vocab.objects
    ):
        raise ValueError("build_model: predicates/objects must start with the training vocabulary's classes")
    clip = clip if clip is not None else build_clip(cfg.preset, cfg.clip_checkpoint, cfg.clip_quick_gelu)
    blocks = cfg.spatio_temporal.blocks or DEFAULT_BLOCKS[vocab.dataset]
    return SageModel(
        cfg,
        clip,
        predicates,
        objects,
        feature_dim=feature_dim,
        teacher_dim=teacher_dim,
        frames=frames or cfg.spatio_temporal.window,
        blocks=blocks,
    )
