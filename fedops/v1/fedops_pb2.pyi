from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_WAIT: _ClassVar[TaskKind]
    TASK_KIND_FIT: _ClassVar[TaskKind]
    TASK_KIND_EVALUATE: _ClassVar[TaskKind]
    TASK_KIND_SEND_INITIAL: _ClassVar[TaskKind]
    TASK_KIND_SHUTDOWN: _ClassVar[TaskKind]
    TASK_KIND_SECAGG: _ClassVar[TaskKind]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_WAIT: TaskKind
TASK_KIND_FIT: TaskKind
TASK_KIND_EVALUATE: TaskKind
TASK_KIND_SEND_INITIAL: TaskKind
TASK_KIND_SHUTDOWN: TaskKind
TASK_KIND_SECAGG: TaskKind

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("protocol_version", "site_name", "num_train_examples", "model", "run_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_TRAIN_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    site_name: str
    num_train_examples: int
    model: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    run_id: str
    def __init__(self, protocol_version: _Optional[str] = ..., site_name: _Optional[str] = ..., num_train_examples: _Optional[int] = ..., model: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., run_id: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("node_id", "token", "run_id", "heartbeat_interval_ms", "max_chunk_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    token: str
    run_id: str
    heartbeat_interval_ms: int
    max_chunk_bytes: int
    def __init__(self, node_id: _Optional[str] = ..., token: _Optional[str] = ..., run_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class PullTaskRequest(_message.Message):
    __slots__ = ("node_id", "token", "wait_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    token: str
    wait_ms: int
    def __init__(self, node_id: _Optional[str] = ..., token: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "run_id", "round", "task_id", "config", "model_digest", "message", "secagg", "monitor", "coordinator_audit", "crl", "train")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_AUDIT_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    run_id: str
    round: int
    task_id: str
    config: _containers.ScalarMap[str, float]
    model_digest: str
    message: str
    secagg: SecAggRequest
    monitor: MonitorRequest
    coordinator_audit: AuditHead
    crl: bytes
    train: TrainSettings
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., config: _Optional[_Mapping[str, float]] = ..., model_digest: _Optional[str] = ..., message: _Optional[str] = ..., secagg: _Optional[_Union[SecAggRequest, _Mapping]] = ..., monitor: _Optional[_Union[MonitorRequest, _Mapping]] = ..., coordinator_audit: _Optional[_Union[AuditHead, _Mapping]] = ..., crl: _Optional[bytes] = ..., train: _Optional[_Union[TrainSettings, _Mapping]] = ...) -> None: ...

class TrainSettings(_message.Message):
    __slots__ = ("epochs", "batch_size", "lr", "optimizer", "momentum")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., optimizer: _Optional[str] = ..., momentum: _Optional[float] = ...) -> None: ...

class AuditHead(_message.Message):
    __slots__ = ("seq", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ("node_id", "token", "task_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    token: str
    task_id: str
    def __init__(self, node_id: _Optional[str] = ..., token: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("tensors", "total_bytes", "model_digest")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    total_bytes: int
    model_digest: str
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., model_digest: _Optional[str] = ...) -> None: ...

class PushResultRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("node_id", "token", "run_id", "round", "task_id", "kind", "num_examples", "metrics", "tensors", "total_bytes", "secagg", "declined", "report", "site_audit")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    SITE_AUDIT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    token: str
    run_id: str
    round: int
    task_id: str
    kind: TaskKind
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    total_bytes: int
    secagg: SecAggReply
    declined: str
    report: SiteReport
    site_audit: AuditHead
    def __init__(self, node_id: _Optional[str] = ..., token: _Optional[str] = ..., run_id: _Optional[str] = ..., round: _Optional[int] = ..., task_id: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., secagg: _Optional[_Union[SecAggReply, _Mapping]] = ..., declined: _Optional[str] = ..., report: _Optional[_Union[SiteReport, _Mapping]] = ..., site_audit: _Optional[_Union[AuditHead, _Mapping]] = ...) -> None: ...

class PushResultResponse(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    token: str
    def __init__(self, node_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class SecAggSetup(_message.Message):
    __slots__ = ("context", "index", "threshold", "cohort", "degree", "committee")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    index: int
    threshold: int
    cohort: _containers.RepeatedScalarFieldContainer[str]
    degree: int
    committee: int
    def __init__(self, context: _Optional[bytes] = ..., index: _Optional[int] = ..., threshold: _Optional[int] = ..., cohort: _Optional[_Iterable[str]] = ..., degree: _Optional[int] = ..., committee: _Optional[int] = ...) -> None: ...

class SecAggPublicKeys(_message.Message):
    __slots__ = ("index", "cipher_key", "mask_key", "num_examples", "identity", "signature", "certificate")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CIPHER_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    cipher_key: bytes
    mask_key: bytes
    num_examples: int
    identity: str
    signature: bytes
    certificate: bytes
    def __init__(self, index: _Optional[int] = ..., cipher_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ..., num_examples: _Optional[int] = ..., identity: _Optional[str] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class SecAggEncoding(_message.Message):
    __slots__ = ("clip", "levels", "max_weight", "l2_clip", "noise_mu", "min_survivors")
    CLIP_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    L2_CLIP_FIELD_NUMBER: _ClassVar[int]
    NOISE_MU_FIELD_NUMBER: _ClassVar[int]
    MIN_SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    clip: float
    levels: int
    max_weight: int
    l2_clip: float
    noise_mu: float
    min_survivors: int
    def __init__(self, clip: _Optional[float] = ..., levels: _Optional[int] = ..., max_weight: _Optional[int] = ..., l2_clip: _Optional[float] = ..., noise_mu: _Optional[float] = ..., min_survivors: _Optional[int] = ...) -> None: ...

class SecAggNeighbourKeys(_message.Message):
    __slots__ = ("keys", "encoding", "terms")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[SecAggPublicKeys]
    encoding: SecAggEncoding
    terms: bytes
    def __init__(self, keys: _Optional[_Iterable[_Union[SecAggPublicKeys, _Mapping]]] = ..., encoding: _Optional[_Union[SecAggEncoding, _Mapping]] = ..., terms: _Optional[bytes] = ...) -> None: ...

class SecAggShare(_message.Message):
    __slots__ = ("source", "target", "ciphertext", "digests")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    source: int
    target: int
    ciphertext: bytes
    digests: bytes
    def __init__(self, source: _Optional[int] = ..., target: _Optional[int] = ..., ciphertext: _Optional[bytes] = ..., digests: _Optional[bytes] = ...) -> None: ...

class SecAggShareKeys(_message.Message):
    __slots__ = ("shares", "commitment")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[SecAggShare]
    commitment: bytes
    def __init__(self, shares: _Optional[_Iterable[_Union[SecAggShare, _Mapping]]] = ..., commitment: _Optional[bytes] = ...) -> None: ...

class SecAggMaskRequest(_message.Message):
    __slots__ = ("shares", "clip", "levels", "max_weight", "l2_clip", "noise_mu", "min_survivors")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    L2_CLIP_FIELD_NUMBER: _ClassVar[int]
    NOISE_MU_FIELD_NUMBER: _ClassVar[int]
    MIN_SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[SecAggShare]
    clip: float
    levels: int
    max_weight: int
    l2_clip: float
    noise_mu: float
    min_survivors: int
    def __init__(self, shares: _Optional[_Iterable[_Union[SecAggShare, _Mapping]]] = ..., clip: _Optional[float] = ..., levels: _Optional[int] = ..., max_weight: _Optional[int] = ..., l2_clip: _Optional[float] = ..., noise_mu: _Optional[float] = ..., min_survivors: _Optional[int] = ...) -> None: ...

class SecAggMasked(_message.Message):
    __slots__ = ("complaints",)
    COMPLAINTS_FIELD_NUMBER: _ClassVar[int]
    complaints: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, complaints: _Optional[_Iterable[int]] = ...) -> None: ...

class SecAggConsistencyRequest(_message.Message):
    __slots__ = ("survivors",)
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, survivors: _Optional[_Iterable[int]] = ...) -> None: ...

class SecAggSurvivorSignature(_message.Message):
    __slots__ = ("signature",)
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...

class SecAggSignedSurvivors(_message.Message):
    __slots__ = ("index", "signature", "certificate")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    signature: bytes
    certificate: bytes
    def __init__(self, index: _Optional[int] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class SecAggUnmaskRequest(_message.Message):
    __slots__ = ("survivors", "signatures")
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[int]
    signatures: _containers.RepeatedCompositeFieldContainer[SecAggSignedSurvivors]
    def __init__(self, survivors: _Optional[_Iterable[int]] = ..., signatures: _Optional[_Iterable[_Union[SecAggSignedSurvivors, _Mapping]]] = ...) -> None: ...

class SecAggRevealedShare(_message.Message):
    __slots__ = ("owner", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: int
    share: bytes
    def __init__(self, owner: _Optional[int] = ..., share: _Optional[bytes] = ...) -> None: ...

class SecAggReveal(_message.Message):
    __slots__ = ("self_mask", "mask_key")
    SELF_MASK_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    self_mask: _containers.RepeatedCompositeFieldContainer[SecAggRevealedShare]
    mask_key: _containers.RepeatedCompositeFieldContainer[SecAggRevealedShare]
    def __init__(self, self_mask: _Optional[_Iterable[_Union[SecAggRevealedShare, _Mapping]]] = ..., mask_key: _Optional[_Iterable[_Union[SecAggRevealedShare, _Mapping]]] = ...) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("setup", "keys", "mask", "unmask", "consistency")
    SETUP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    UNMASK_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    setup: SecAggSetup
    keys: SecAggNeighbourKeys
    mask: SecAggMaskRequest
    unmask: SecAggUnmaskRequest
    consistency: SecAggConsistencyRequest
    def __init__(self, setup: _Optional[_Union[SecAggSetup, _Mapping]] = ..., keys: _Optional[_Union[SecAggNeighbourKeys, _Mapping]] = ..., mask: _Optional[_Union[SecAggMaskRequest, _Mapping]] = ..., unmask: _Optional[_Union[SecAggUnmaskRequest, _Mapping]] = ..., consistency: _Optional[_Union[SecAggConsistencyRequest, _Mapping]] = ...) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("keys", "shares", "masked", "reveal", "signature")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    REVEAL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    keys: SecAggPublicKeys
    shares: SecAggShareKeys
    masked: SecAggMasked
    reveal: SecAggReveal
    signature: SecAggSurvivorSignature
    def __init__(self, keys: _Optional[_Union[SecAggPublicKeys, _Mapping]] = ..., shares: _Optional[_Union[SecAggShareKeys, _Mapping]] = ..., masked: _Optional[_Union[SecAggMasked, _Mapping]] = ..., reveal: _Optional[_Union[SecAggReveal, _Mapping]] = ..., signature: _Optional[_Union[SecAggSurvivorSignature, _Mapping]] = ...) -> None: ...

class FeatureEdges(_message.Message):
    __slots__ = ("name", "edges")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    edges: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., edges: _Optional[_Iterable[float]] = ...) -> None: ...

class MonitorRequest(_message.Message):
    __slots__ = ("edges", "num_classes", "positive_label")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_LABEL_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedCompositeFieldContainer[FeatureEdges]
    num_classes: int
    positive_label: int
    def __init__(self, edges: _Optional[_Iterable[_Union[FeatureEdges, _Mapping]]] = ..., num_classes: _Optional[int] = ..., positive_label: _Optional[int] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("name", "reference", "current")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    reference: _containers.RepeatedScalarFieldContainer[int]
    current: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., reference: _Optional[_Iterable[int]] = ..., current: _Optional[_Iterable[int]] = ...) -> None: ...

class DriftStatistic(_message.Message):
    __slots__ = ("feature", "psi", "js", "ks", "ks_pvalue")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    JS_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    js: float
    ks: float
    ks_pvalue: float
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ..., js: _Optional[float] = ..., ks: _Optional[float] = ..., ks_pvalue: _Optional[float] = ...) -> None: ...

class GroupConfusion(_message.Message):
    __slots__ = ("group", "n", "tp", "fp", "tn", "fn", "correct")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    TP_FIELD_NUMBER: _ClassVar[int]
    FP_FIELD_NUMBER: _ClassVar[int]
    TN_FIELD_NUMBER: _ClassVar[int]
    FN_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    group: int
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    correct: int
    def __init__(self, group: _Optional[int] = ..., n: _Optional[int] = ..., tp: _Optional[int] = ..., fp: _Optional[int] = ..., tn: _Optional[int] = ..., fn: _Optional[int] = ..., correct: _Optional[int] = ...) -> None: ...

class SiteReport(_message.Message):
    __slots__ = ("drift", "histograms", "fairness")
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    FAIRNESS_FIELD_NUMBER: _ClassVar[int]
    drift: _containers.RepeatedCompositeFieldContainer[DriftStatistic]
    histograms: _containers.RepeatedCompositeFieldContainer[Histogram]
    fairness: _containers.RepeatedCompositeFieldContainer[GroupConfusion]
    def __init__(self, drift: _Optional[_Iterable[_Union[DriftStatistic, _Mapping]]] = ..., histograms: _Optional[_Iterable[_Union[Histogram, _Mapping]]] = ..., fairness: _Optional[_Iterable[_Union[GroupConfusion, _Mapping]]] = ...) -> None: ...

class AdminRequest(_message.Message):
    __slots__ = ("reason", "run_id")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    reason: str
    run_id: str
    def __init__(self, reason: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "state", "round", "rounds_planned", "sites", "message")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_PLANNED_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: str
    round: int
    rounds_planned: int
    sites: _containers.RepeatedScalarFieldContainer[str]
    message: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[str] = ..., round: _Optional[int] = ..., rounds_planned: _Optional[int] = ..., sites: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ...) -> None: ...

class OfferRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunOffer(_message.Message):
    __slots__ = ("open", "run_id", "task", "task_digest", "partition", "alpha", "data_seed", "train", "privacy", "epsilon", "delta", "secagg", "rounds", "config_digest", "message")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TASK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DATA_SEED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    open: bool
    run_id: str
    task: str
    task_digest: str
    partition: str
    alpha: float
    data_seed: int
    train: TrainSettings
    privacy: str
    epsilon: float
    delta: float
    secagg: str
    rounds: int
    config_digest: str
    message: str
    def __init__(self, open: _Optional[bool] = ..., run_id: _Optional[str] = ..., task: _Optional[str] = ..., task_digest: _Optional[str] = ..., partition: _Optional[str] = ..., alpha: _Optional[float] = ..., data_seed: _Optional[int] = ..., train: _Optional[_Union[TrainSettings, _Mapping]] = ..., privacy: _Optional[str] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., secagg: _Optional[str] = ..., rounds: _Optional[int] = ..., config_digest: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RunSubmit(_message.Message):
    __slots__ = ("config_yaml", "reason")
    CONFIG_YAML_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    config_yaml: str
    reason: str
    def __init__(self, config_yaml: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("id", "state", "submitted_by", "submitted_at", "task", "run_id", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    submitted_by: str
    submitted_at: str
    task: str
    run_id: str
    message: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., submitted_by: _Optional[str] = ..., submitted_at: _Optional[str] = ..., task: _Optional[str] = ..., run_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RunList(_message.Message):
    __slots__ = ("runs", "message")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    message: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., message: _Optional[str] = ...) -> None: ...

class RunStopRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
