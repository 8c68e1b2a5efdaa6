"""The run store's tables in ``state.sqlite`` (:class:`fedops.runtime.store.RunStore`).

What the store commits is checked against the signed audit log on resume
(:mod:`fedops.runtime.audit.commitments`): whoever holds the run directory can edit it.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created REAL, config_json TEXT, config_digest TEXT
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, finished REAL, metrics_json TEXT,
    checkpoint TEXT, checkpoint_sha256 TEXT, model_digest TEXT
);
CREATE TABLE IF NOT EXISTS participants (
    round INTEGER, phase TEXT, node_id TEXT, site TEXT, outcome TEXT,
    num_examples INTEGER, reason TEXT
);
CREATE TABLE IF NOT EXISTS rejections (
    time REAL, round INTEGER, node_id TEXT, code TEXT, reason TEXT
);
CREATE TABLE IF NOT EXISTS privacy_spent (
    round INTEGER PRIMARY KEY, ledger_json TEXT
);
"""
