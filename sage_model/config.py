"""Typed configuration of one SAGE experiment (model + training + data + evaluation).

Every ablation of the paper is one field here with a default that reproduces the paper's
model, so that a table row is one dotted override away from the full model
(e.g. ``model.prompt.insert_layer: 4``). All models are frozen and reject unknown keys, so a
typo in a study fails with its dotted path instead of being silently ignored.

This module is the contract between ``sage_model`` and ``harness``: the harness validates
study overrides against :class:`ExperimentConfig` and hands the resolved config to
:func:`sage_model.experiment.run_experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DatasetName = Literal["vidvrd", "vidor"]
Task = Literal["sgdet", "sgcls", "predcls"]
EvalSplit = Literal["novel", "all"]


class Spec(BaseModel):
    """Base of every config block: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SemanticConfig(Spec):
    """(I) Semantic enhancement from the offline MLLM teacher's four-perspective text features."""

    fusion: Literal["cross_attention", "sum", "concat", "gated", "none"] = Field(
        "cross_attention", description="How teacher text tokens enter the visual tokens; 'none' = w/o SE."
    )
    heads: int = Field(8, ge=1, description="Attention heads of the self/cross-attention blocks.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout inside the attention blocks.")
    at_test: Literal["teacher", "none"] = Field(
        "teacher",
        description="Teacher input at test time. teacher: test pairs get their pre-computed teacher features, "
        "as the paper's Eq. 4-5 need F_text on every forward pass and its Table 10 text says the features are "
        "'pre-computed offline'; none: the teacher only shapes training ('Training-time Semantic Injection'), "
        "test pairs get the learnt no-teacher tokens and the test teacher store is never opened.",
    )
    teacher_dropout: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="Stage-1 probability that a training pair sees the learnt no-teacher tokens instead of its "
        "teacher features (so that a model run without the teacher has seen that input); None = 0 with "
        "at_test: teacher (the paper drops nothing), 0.5 with at_test: none.",
    )

    @property
    def effective_teacher_dropout(self) -> float:
        """``teacher_dropout`` with its at_test-dependent default resolved."""
        if self.teacher_dropout is not None:
            return self.teacher_dropout
        return 0.5 if self.at_test == "none" else 0.0


class SpatioTemporalConfig(Spec):
    """(II) Spatial transformer per keyframe, temporal transformer over neighbouring keyframes."""

    spatial: Literal["transformer", "linear"] = Field(
        "transformer", description="'linear' = w/o Spa: linear layers of about the same parameter count."
    )
    temporal: Literal["transformer", "linear"] = Field(
        "transformer", description="'linear' = w/o Tem: linear layers of about the same parameter count."
    )
    blocks: int | None = Field(
        None, ge=1, le=8, description="Transformer blocks; None = dataset default (1 VidVRD, 2 VidOR)."
    )
    heads: int = Field(8, ge=1, description="Attention heads (paper: 8).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Transformer dropout (paper: 0.1).")
    window: int = Field(3, ge=1, description="Keyframes seen by the temporal transformer (t-1, t, t+1).")


class PromptConfig(Spec):
    """(III) Class enhancement: decoupled class-aware prompting with the TKE network."""

    strategy: Literal["class_aware", "image_cond", "none"] = Field(
        "class_aware",
        description="class_aware = SAGE; image_cond = CoCoOp/OV-MMP meta-net per instance; none = w/o CE.",
    )
    n_ctx: int = Field(8, ge=1, le=32, description="Learnable context tokens P_learn.")
    class_position: int = Field(
        6, ge=0, description="Context tokens before the class name (paper: [CLS] at 75% -> after 6 of 8)."
    )
    init: Literal["fixed", "learnable", "domain_specific", "random"] = Field(
        "domain_specific", description="Prompt template initialisation (Table 9)."
    )
    init_text: str = Field(
        "Two entities in video sequence", description="Template used by the domain_specific init."
    )
    template_text: str = Field(
        "a video of two objects that", description="Hand-crafted template for 'fixed'/'learnable' and w/o CE."
    )
    insert_layer: int = Field(6, ge=1, le=11, description="Text-encoder layer l where TKE tokens enter.")
    n_class_tokens: int = Field(8, ge=1, le=32, description="M class-aware tokens made by TKE.")
    tke_bottleneck: int = Field(64, ge=1, description="TKE bottleneck width (Table 7: 32/64/128/256).")
    insertion: Literal["append", "replace"] = Field(
        "append",
        description="append: TKE tokens are added to the sequence at layer l; replace: they overwrite the "
        "context slots at layer l (deep-prompt style).",
    )


class AdapterConfig(Spec):
    """Residual bottleneck adapters (CLIP-Adapter style), Table 6."""

    visual: bool = Field(True, description="Adapter on V_vr before the classifier.")
    text: bool = Field(True, description="Adapter on the relation classifier F'_L.")
    reduction: int = Field(4, ge=1, description="Bottleneck reduction factor.")
    ratio: float = Field(0.2, ge=0.0, le=1.0, description="Residual mixing ratio of the adapter output.")


class LossConfig(Spec):
    """L = L_rel + alpha L_obj + beta L_int + gamma L_kg (alpha, beta, gamma unstated in the paper)."""

    alpha: float = Field(0.2, gt=0.0, description="Weight of the object classification loss.")
    beta: float = Field(0.1, gt=0.0, description="Weight of the interaction loss.")
    gamma: float = Field(1.0, ge=0.0, description="Weight of the knowledge-guided consistency loss.")
    tau: float = Field(
        0.07,
        gt=0.0,
        description="Temperature of the relation logits cos(V_vr, F'_L) / tau (and of the object logits unless "
        "object_tau is set). The paper writes one tau for both and gives no value: 0.07 is CLIP's initial "
        "temperature; OV-MMP uses 0.01 (CLIP's trained logit scale 100).",
    )
    object_tau: float | None = Field(
        None, gt=0.0, description="Temperature of the object logits cos(V_obj, W_obj) / tau; None = tau."
    )
    focal_gamma: float = Field(2.0, ge=0.0, description="Focusing parameter of the focal losses.")

    @property
    def effective_object_tau(self) -> float:
        """``object_tau``, or the shared ``tau`` when it is None."""
        return self.object_tau if self.object_tau is not None else self.tau


class ModelConfig(Spec):
    """The SAGE model; defaults are the paper's full model."""

    preset: Literal["sage_tiny", "sage_vitb16"] = Field(
        "sage_tiny", description="sage_tiny: random tiny CLIP (CPU/CI); sage_vitb16: the paper's CLIP ViT-B/16."
    )
    clip_checkpoint: Path | None = Field(
        None,
        description="Local CLIP ViT-B/16 checkpoint for sage_vitb16 (OpenAI TorchScript .pt, open_clip state dict "
        ".pt/.bin, or .safetensors; never downloaded).",
    )
    clip_quick_gelu: bool | Literal["auto"] = Field(
        "auto",
        description="QuickGELU in the CLIP towers: auto = only for weights trained with it (OpenAI's archive or "
        "keys, a path naming a QuickGELU release); true/false to say so for a re-saved state dict.",
    )
    hidden_dim: int | None = Field(None, ge=8, description="Visual token width; None = CLIP embed dim.")
    class_template: str = Field(
        "{}",
        description="Sentence of the frozen CLIP class embeddings W_clip (predicates, TKE input, L_kg target) and "
        "W_obj (objects); '{}' = the class name alone, as the synthetic data's class semantics.",
    )
    semantic: SemanticConfig = SemanticConfig()
    spatio_temporal: SpatioTemporalConfig = SpatioTemporalConfig()
    prompt: PromptConfig = PromptConfig()
    adapters: AdapterConfig = AdapterConfig()
    loss: LossConfig = LossConfig()

    @model_validator(mode="after")
    def _class_position_within_context(self) -> ModelConfig:
        if self.prompt.class_position > self.prompt.n_ctx:
            raise ValueError(
                f"prompt.class_position: must be in 0..{self.prompt.n_ctx} (n_ctx), got {self.prompt.class_position}"
            )
        return self


class TrainConfig(Spec):
    """Two-stage training (stage 1: spatio-temporal, text frozen; stage 2: class enhancement)."""

    schedule: str = Field(
        "default",
        description="Name of the harness schedule these values came from (--schedule; a label the model "
        "ignores, recorded with every result so a number names its training budget).",
    )

    stage1_epochs: int = Field(30, ge=0, description="Epochs of stage 1.")
    stage2_epochs: int = Field(30, ge=0, description="Epochs of stage 2.")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay.")
    milestones: tuple[int, ...] = Field((15, 20, 25), description="MultiStep decay epochs (per stage).")
    lr_decay: float = Field(0.1, gt=0.0, le=1.0, description="MultiStep decay factor.")
    batch_size: int = Field(32, ge=1, description="Pairs per batch.")
    stage2_batch_size: int | None = Field(
        None, ge=1, description="Pairs per stage-2 batch; None = batch_size. A stage-2 step costs one text-encoder "
        "pass over the vocabulary whatever the batch, so larger batches make stage 2 cheaper per epoch.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present.")
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on the CPU).")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Training videos held out for validation (model selection, tuning)."
    )
    select_on: Literal["last", "val"] = Field(
        "last", description="Checkpoint kept: the last epoch, or the best validation mAP. Never the test split."
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers.")
    novel_object_pairs: Literal["keep", "drop"] = Field(
        "drop",
        description="Training pairs whose subject or object is a novel object class. drop: removed from training "
        "(paper section 3.1: training sees base categories only); keep: they train on their base predicates "
        "with the object loss ignored (OV-MMP's code).",
    )
    shuffle_labels: bool = Field(
        False,
        description="Sanity control: the training targets (predicates, classes, interaction) of each pair come "
        "from another pair (a fixed permutation seeded by the trial seed); a model that still scores well "
        "would be reading the evaluation, not learning.",
    )


class DataConfig(Spec):
    """Where the data comes from. root=None means the embedded synthetic dataset."""

    dataset: DatasetName = Field("vidvrd", description="Training dataset.")
    test_dataset: DatasetName | None = Field(
        None, description="Evaluation dataset when it differs from training (Table 11: VidOR -> VidVRD)."
    )
    root: Path | None = Field(None, description="Dataset root with annotations + feature store; None = synthetic.")
    test_root: Path | None = Field(
        None, description="Dataset root of test_dataset when it differs from dataset and root is real (Table 11)."
    )
    teacher: str = Field("asmv2", description="Teacher artifact name under <root>/teachers/ ('none' = no teacher).")
    synthetic_videos: int = Field(24, ge=4, description="Videos per split of the embedded synthetic dataset.")
    synthetic_test_videos: int | None = Field(
        None, ge=2, description="Test videos of the embedded synthetic dataset when they differ from synthetic_videos "
        "(None: the same). More test videos narrow every interval; the training split, and so the trained model, "
        "does not change.",
    )
    synthetic_seed: int = Field(0, ge=0, description="Seed of the embedded synthetic dataset.")
    max_train_videos: int | None = Field(None, ge=1, description="Cap on training videos (smoke runs).")
    max_test_videos: int | None = Field(
        None, ge=1, description="Score only the first N test videos (by id), and validate on at most N held-out "
        "training videos: smoke runs, quick looks."
    )


class EvalConfig(Spec):
    """What is evaluated after training (and per epoch for the curves)."""

    tasks: tuple[Task, ...] = Field(("sgdet", "predcls"), description="Settings evaluated at the end.")
    splits: tuple[EvalSplit, ...] = Field(("novel", "all"), description="Novel and/or All split.")
    top_k: int = Field(200, ge=1, description="Video-level predictions kept per video.")
    predicates_per_pair: int = Field(10, ge=1, description="Top predicates kept per pair and segment.")
    every_epoch: bool = Field(True, description="Evaluate PredCls on the validation split after every epoch.")
    tagging_divisor: Literal["official", "k"] = Field(
        "official", description="Tagging precision divisor: official min(K, #unique) or corrected K."
    )
    measure_speed: bool = Field(False, description="Also measure parameter count and inference FPS (Table 10).")
    segmentation: Literal["ovmmp", "vidvrd2"] = Field(
        "ovmmp",
        description="Which stored segments become predictions. ovmmp: per pair, non-overlapping 30-frame clips (a "
        "last clip of >= 10 new frames kept), one keyframe each, as OV-MMP which SAGE extends; vidvrd2: every "
        "30-frame window with stride 15 (VidVRD-II, RePro).",
    )
    association: Literal["pair", "greedy"] = Field(
        "pair",
        description="How segment relations become video-level ones (SGDet and all tasks). pair: consecutive clips of "
        "the same track pair with the same triplet are linked (OV-MMP); greedy: VidVRD-II's greedy relational "
        "association by trajectory cubic IoU.",
    )
    aggregation: Literal["mean", "sum"] = Field(
        "mean",
        description="Score of a linked relation from its segment scores: mean (OV-MMP: s * o * mean(p)) or sum "
        "(VidVRD-II: longer relations rank higher).",
    )
    linkage_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="greedy: cubic IoU both trajectories must exceed to link."
    )
    temporal_tolerance: int = Field(
        30, ge=0, description="greedy: largest gap (frames) across which facing boxes may still link."
    )
    cross_dataset_novel: Literal["predicate", "category"] = Field(
        "predicate",
        description="Cross-dataset 'novel' split (Table 11). predicate: GT relations whose predicate the training "
        "dataset lacks, objects of any class (the Novel rule of the OV protocol); category: relations with any "
        "category (subject, predicate or object) the training dataset lacks.",
    )
    stability_noise: tuple[float, ...] = Field(
        (), description="Visual noise levels (std relative to feature norm) of the Fig. 4 stability analysis; () = off."
    )


class ExperimentConfig(Spec):
    """One fully resolved trial: what the harness hashes, logs and hands to sage_model."""

    seed: int = Field(0, ge=0, description="Seed of everything random in the trial.")
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
