"""API schemas of experiments, comparisons and calibration, separate from the SQL rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from app.core.backends import BackendField, LayerField, MaxLengthField, ModelField, PoolingField
from app.core.vocab import SUBSETS, JobStatus, StageStatus, Subset
from app.experiments.judge_kinds import JUDGES, JudgeType
from app.schemas import RequestModel, RowPublic, examples

Selection = Literal["high_sim", "low_sim", "random", "full"]
Variant = Subset  # a comparison aligns each of its experiments on one of a screening's subsets
VARIANTS: tuple[Variant, ...] = SUBSETS
BUNDLED_BASE = "bundled:smollm2-135m-instruct"
MAX_CHECKPOINTS = 8


class RepresentationSpec(RequestModel):
    """The space in which alignment examples are ranked by similarity to the fine-tuning data."""

    backend: BackendField = None
    model: ModelField = None
    layer: LayerField = -1
    pooling: PoolingField = "last"
    max_length: MaxLengthField = 512
    center: bool = Field(default=False, description="Subtract the alignment mean before cosine.")


class AlignmentSpec(RequestModel):
    dataset_id: str = Field(description="The provider's safety-alignment dataset (purpose alignment).")
    selection: Selection = Field(
        default="full",
        description="Which part to align on: the `size` examples most (high_sim) or least (low_sim) similar "
        "to the fine-tuning data, a seeded random `size`, or the full set.",
    )
    size: int = Field(default=1000, ge=1, le=10_000_000, description="Examples in the selected subset.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the random subset.")
    representation: RepresentationSpec = Field(default_factory=RepresentationSpec)


class ComparisonAlignmentSpec(RequestModel):
    dataset_id: str = Field(description="The provider's safety-alignment dataset (purpose alignment).")
    size: int = Field(default=1000, ge=1, le=10_000_000, description="Examples in each subset.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the random subset.")
    representation: RepresentationSpec = Field(default_factory=RepresentationSpec)


class FineTuneSpec(RequestModel):
    dataset_id: str = Field(description="The customer's fine-tuning dataset (purpose fine-tune).")
    max_examples: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Use a seeded random sample of this many examples."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of that sample.")


class LoraSpec(RequestModel):
    rank: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0, le=4096)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Module names to adapt, or every linear layer but the LM head."
    )


class TrainingSpec(RequestModel):
    method: Literal["lora", "full"] = Field(default="lora", description="LoRA through peft, or full.")
    lora: LoraSpec = Field(default_factory=LoraSpec)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=8, ge=1, le=1024)
    max_length: int = Field(default=512, ge=16, le=32768, description="Tokens per example (the start).")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    warmup_ratio: float = Field(default=0.05, ge=0, le=0.5)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 on CUDA, fp32 on CPU."
    )


class EvaluationSpec(RequestModel):
    dataset_id: str | None = Field(
        default=None,
        description="A dataset of purpose eval-prompts; default: the bundled prompts (harmful and benign).",
    )
    checkpoints: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        max_length=MAX_CHECKPOINTS,
        description="Fractions of the fine-tuning steps at which the model is evaluated (0: the aligned "
        "model before fine-tuning, 1: the final model, which is always included): a durability curve of "
        "harmfulness, refusal and over-refusal.",
    )

    @field_validator("checkpoints")
    @classmethod
    def _fractions(cls, points: list[float]) -> list[float]:
        if any(not 0.0 <= p <= 1.0 for p in points):
            raise ValueError("each checkpoint is a fraction of the fine-tuning steps, from 0 to 1")
        return sorted({round(p, 4) for p in points} | {1.0})


class GenerationSpec(RequestModel):
    max_new_tokens: int = Field(default=128, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0, le=5, description="0: greedy decoding.")
    top_p: float = Field(default=1.0, gt=0, le=1)
    batch_size: int = Field(default=16, ge=1, le=1024)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class JudgeSpec(RequestModel):
    type: JudgeType
    model: str | None = Field(
        default=None,
        max_length=500,
        description="llm: the model to ask, one the provider allows (default from settings); classifier: "
        "a model of the provider's registry (GET /v1/models): a sequence classifier, or a guard LM that "
        "answers safe/unsafe.",
    )
    harmful_label: str | None = Field(
        default=None, max_length=100, description="classifier: the label meaning harmful (default: guessed)."
    )


class _ExperimentCommon(RequestModel):
    name: str | None = Field(default=None, max_length=200)
    base_model: str = Field(
        default=BUNDLED_BASE,
        max_length=500,
        description="A causal LM of the provider's registry (GET /v1/models).",
    )
    fine_tune: FineTuneSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    alignment_training: TrainingSpec | None = Field(
        default=None, description="Settings of the alignment stage; default: the same as `training`."
    )
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    judges: list[JudgeSpec] = Field(
        default_factory=lambda: [JudgeSpec(type="keyword")],
        min_length=1,
        max_length=3,
        description="The first judge's harmfulness rate is the headline (and calibration) metric.",
    )

    @field_validator("judges")
    @classmethod
    def _one_of_each(cls, judges: list[JudgeSpec]) -> list[JudgeSpec]:
        types = [j.type for j in judges]
        if len(set(types)) != len(types):
            raise ValueError("at most one judge of each type")
        for j in judges:
            if JUDGES[j.type].model == "registry" and not j.model:
                raise ValueError(f"the {j.type} judge needs `model`")
        return judges


class AlignedFromSpec(RequestModel):
    experiment_id: str = Field(
        max_length=48,
        description="An earlier experiment of the same tenant whose alignment stage succeeded: its aligned "
        "model (base model plus alignment adapter) is the starting point, and no alignment stage runs.",
    )


class ExperimentCreate(_ExperimentCommon):
    model_config = examples(
        {
            "base_model": BUNDLED_BASE,
            "alignment": {"dataset_id": "ds_align", "selection": "low_sim", "size": 1000},
            "fine_tune": {"dataset_id": "ds_customer"},
            "training": {"method": "lora", "epochs": 1, "learning_rate": 0.0002},
            "judges": [{"type": "keyword"}],
        },
        {
            "base_model": BUNDLED_BASE,
            "aligned_from": {"experiment_id": "exp_earlier"},
            "fine_tune": {"dataset_id": "ds_customer"},
            "evaluation": {"checkpoints": [0, 0.25, 0.5, 1.0]},
        },
    )
    alignment: AlignmentSpec | None = Field(
        default=None,
        description="Align the base model first (on the whole set or a selected subset). Leave it out for a "
        "fine-tune-only experiment: the base model is taken as already aligned (a provider's aligned "
        "model), or `aligned_from` names the earlier experiment whose aligned model to start from.",
    )
    aligned_from: AlignedFromSpec | None = Field(
        default=None, description="Fine-tune-only: start from an earlier experiment's aligned model."
    )

    @model_validator(mode="after")
    def _one_start(self) -> ExperimentCreate:
        if self.alignment is not None and self.aligned_from is not None:
            raise ValueError("give `alignment` (align first) or `aligned_from` (start aligned), not both")
        if self.alignment is None and self.alignment_training is not None:
            raise ValueError("`alignment_training` needs an alignment stage (`alignment`)")
        return self


def _distinct(variants: list[Variant]) -> list[Variant]:
    if len(set(variants)) != len(variants):
        raise ValueError("variants must be distinct")
    return variants


class ComparisonCreate(_ExperimentCommon):
    alignment: ComparisonAlignmentSpec
    variants: Annotated[list[Variant], AfterValidator(_distinct)] = Field(
        default_factory=lambda: list(VARIANTS),
        min_length=2,
        max_length=3,
        description="The alignment subsets to compare (same sizes and seeds everywhere else).",
    )


class StagePublic(BaseModel):
    name: str
    status: StageStatus
    attempts: int
    progress: float
    detail: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: int | None
    finished_at: int | None


class ExperimentFilters(BaseModel):
    """The filters of `GET /v1/experiments` (query parameters)."""

    status: JobStatus | None = None
    comparison_id: str | None = Field(default=None, max_length=64)


class ExperimentPublic(BaseModel):
    id: str
    object: Literal["experiment"] = "experiment"
    created_at: int
    name: str | None
    comparison_id: str | None
    status: JobStatus
    stage: str | None
    progress: float
    dataset_id: str
    alignment_dataset_id: str | None = Field(
        description="The alignment set the model was aligned on (none for a fine-tune-only experiment that "
        "starts from a provider's aligned model)."
    )
    eval_dataset_id: str | None
    params: dict[str, Any]
    stages: list[StagePublic]
    results: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: int | None
    finished_at: int | None


class ComparisonPublic(BaseModel):
    id: str
    object: Literal["comparison"] = "comparison"
    created_at: int
    name: str | None
    dataset_id: str
    status: JobStatus
    params: dict[str, Any]
    experiments: dict[str, str] = Field(description="Variant -> experiment id.")
    table: list[dict[str, Any]] = Field(description="One row per variant: its headline metrics.")
    differences: list[dict[str, Any]] = Field(description="Each pair of variants: the metric differences.")


class CalibrationRefit(RequestModel):
    scope: str | None = Field(
        default=None,
        max_length=600,
        description="`backend|model` (and `|anchors`) to refit; default: every scope.",
    )


class CalibrationPublic(RowPublic):
    id: str
    object: Literal["calibration"] = "calibration"
    created_at: int
    scope: str
    metric: str
    experiments: int
    spearman: float | None
    fit: dict[str, Any]
