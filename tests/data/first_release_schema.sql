-- The schema embtune's first release created on SQLite (SQLAlchemy create_all; no alembic_version table).
CREATE TABLE collections (
	id INTEGER NOT NULL,
	name VARCHAR(200) NOT NULL,
	model_spec VARCHAR(500) NOT NULL,
	model_fingerprint VARCHAR(64) NOT NULL,
	dimension INTEGER NOT NULL,
	index_kind VARCHAR(200) NOT NULL,
	path TEXT NOT NULL,
	item_count INTEGER NOT NULL,
	source TEXT,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (name)
);
CREATE TABLE labelled_pairs (
	id INTEGER NOT NULL,
	collection_name VARCHAR(200),
	"query" TEXT NOT NULL,
	item_key VARCHAR(500) NOT NULL,
	item_text TEXT,
	score FLOAT NOT NULL,
	annotator VARCHAR(200) NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT score_in_unit_range CHECK (score >= 0 AND score <= 1)
);
CREATE INDEX ix_labelled_pairs_collection_name ON labelled_pairs (collection_name);
CREATE TABLE label_queries (
	id INTEGER NOT NULL,
	collection_name VARCHAR(200) NOT NULL,
	"query" TEXT NOT NULL,
	source TEXT,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (collection_name, "query")
);
CREATE INDEX ix_label_queries_collection_name ON label_queries (collection_name);
CREATE TABLE training_runs (
	id INTEGER NOT NULL,
	name VARCHAR(200) NOT NULL,
	collection_name VARCHAR(200),
	status VARCHAR(20) NOT NULL,
	config JSON NOT NULL,
	dataset_fingerprint VARCHAR(64),
	progress JSON NOT NULL,
	epoch_metrics JSON NOT NULL,
	before_after JSON NOT NULL,
	model_path TEXT,
	error TEXT,
	created_at DATETIME NOT NULL,
	started_at DATETIME,
	finished_at DATETIME,
	PRIMARY KEY (id),
	UNIQUE (name)
);
CREATE INDEX ix_training_runs_collection_name ON training_runs (collection_name);
CREATE TABLE run_processes (
	id INTEGER NOT NULL,
	run_name VARCHAR(200) NOT NULL,
	pid INTEGER,
	host VARCHAR(200),
	process_started FLOAT,
	log_path TEXT,
	cancel_requested INTEGER NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (run_name)
);
CREATE TABLE evaluations (
	id INTEGER NOT NULL,
	run_name VARCHAR(200),
	model_spec VARCHAR(500) NOT NULL,
	model_fingerprint VARCHAR(64),
	data_source TEXT NOT NULL,
	metrics JSON NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_evaluations_run_name ON evaluations (run_name);
CREATE TABLE finetune_examples (
	id INTEGER NOT NULL,
	collection_name VARCHAR(200) NOT NULL,
	kind VARCHAR(10) NOT NULL,
	input TEXT NOT NULL,
	workflow_id VARCHAR(500) NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_finetune_examples_collection_name ON finetune_examples (collection_name);
CREATE TABLE finetune_states (
	id INTEGER NOT NULL,
	collection_name VARCHAR(200) NOT NULL,
	state VARCHAR(20) NOT NULL,
	attempts INTEGER NOT NULL,
	trainings_run INTEGER NOT NULL,
	failures INTEGER NOT NULL,
	examples_seen INTEGER NOT NULL,
	pending INTEGER NOT NULL,
	last_loss FLOAT,
	current_checkpoint TEXT,
	last_error TEXT,
	metrics_history JSON NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (collection_name)
);
CREATE TABLE items (
	id INTEGER NOT NULL,
	collection_id INTEGER NOT NULL,
	item_key VARCHAR(500) NOT NULL,
	text TEXT,
	image_path TEXT,
	metadata_json JSON NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (collection_id, item_key),
	FOREIGN KEY(collection_id) REFERENCES collections (id) ON DELETE CASCADE
);
CREATE INDEX ix_items_collection_id ON items (collection_id);
CREATE TABLE evaluation_query_results (
	id INTEGER NOT NULL,
	evaluation_id INTEGER NOT NULL,
	query_id VARCHAR(500) NOT NULL,
	dimension INTEGER NOT NULL,
	metric VARCHAR(100) NOT NULL,
	value FLOAT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(evaluation_id) REFERENCES evaluations (id) ON DELETE CASCADE
);
CREATE INDEX ix_evaluation_query_results_evaluation_id ON evaluation_query_results (evaluation_id);
