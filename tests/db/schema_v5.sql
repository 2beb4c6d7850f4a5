-- The schema as the previous version of `db.schema` (hand-written DDL, migrations up to v5) left
-- it, for the accounts "demo": `pg_dump --schema-only` of a fresh database, comments dropped.
-- tests/db/test_schema.py loads it to prove such a database converges with nothing to do.
CREATE SCHEMA account_activities;
CREATE SCHEMA accounts;
CREATE DOMAIN accounts.finite_double AS double precision
	CONSTRAINT finite_double_check CHECK (((VALUE IS NULL) OR ((VALUE <> 'NaN'::double precision) AND (VALUE <> 'Infinity'::double precision) AND (VALUE <> '-Infinity'::double precision))));
CREATE DOMAIN accounts.finite_numeric AS numeric
	CONSTRAINT finite_numeric_check CHECK (((VALUE IS NULL) OR ((VALUE <> 'NaN'::numeric) AND (VALUE <> 'Infinity'::numeric) AND (VALUE <> '-Infinity'::numeric))));
CREATE TABLE account_activities.raw_activities_demo (
    id text NOT NULL,
    activity_type text NOT NULL,
    transaction_time timestamp with time zone NOT NULL,
    symbol text,
    side text,
    qty accounts.finite_numeric,
    price accounts.finite_numeric,
    net_amount accounts.finite_numeric,
    execution_id uuid,
    order_id uuid,
    raw_json jsonb,
    ingested_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE account_activities.raw_orders_demo (
    id uuid NOT NULL,
    client_order_id text,
    request_id text,
    parent_id text,
    replaced_by text,
    replaces text,
    symbol text NOT NULL,
    side text NOT NULL,
    order_type text NOT NULL,
    status text NOT NULL,
    qty accounts.finite_numeric,
    filled_qty accounts.finite_numeric DEFAULT 0 NOT NULL,
    filled_avg_price accounts.finite_numeric,
    limit_price accounts.finite_numeric,
    stop_price accounts.finite_numeric,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone,
    submitted_at timestamp with time zone,
    filled_at timestamp with time zone,
    expired_at timestamp with time zone,
    canceled_at timestamp with time zone,
    replaced_at timestamp with time zone,
    expires_at timestamp with time zone,
    raw_json jsonb,
    legs jsonb,
    ingested_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts.account_closed_demo (
    entry_lot_id text NOT NULL,
    exit_order_id text NOT NULL,
    exit_parent_id text,
    symbol text NOT NULL,
    side text NOT NULL,
    qty accounts.finite_numeric NOT NULL,
    entry_time timestamp with time zone,
    entry_price accounts.finite_numeric,
    exit_time timestamp with time zone,
    exit_price accounts.finite_numeric,
    exit_type text NOT NULL,
    pnl_cash accounts.finite_numeric,
    pnl_cash_fifo accounts.finite_numeric,
    diff_pnl accounts.finite_numeric,
    pnl_pct accounts.finite_numeric,
    return_pct accounts.finite_numeric,
    duration_sec accounts.finite_numeric,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT account_closed_demo_qty_check CHECK (((qty)::numeric > (0)::numeric)),
    CONSTRAINT account_closed_demo_side_check CHECK ((side = ANY (ARRAY['long'::text, 'short'::text]))),
    CONSTRAINT exit_type_allowed CHECK ((exit_type = ANY (ARRAY['TP'::text, 'SL'::text, 'MANUAL'::text, 'CORPORATE'::text])))
);
CREATE TABLE accounts.account_equity_full_demo (
    date date NOT NULL,
    deposit accounts.finite_numeric,
    cash_balance accounts.finite_numeric,
    market_value accounts.finite_numeric,
    daily_return accounts.finite_numeric,
    cumulative_return accounts.finite_numeric,
    drawdown accounts.finite_numeric,
    net_flows accounts.finite_numeric,
    sharpe_10 accounts.finite_double,
    smart_sharpe_10 accounts.finite_double,
    sharpe_21 accounts.finite_double,
    smart_sharpe_21 accounts.finite_double,
    sharpe_63 accounts.finite_double,
    smart_sharpe_63 accounts.finite_double,
    sharpe_126 accounts.finite_double,
    smart_sharpe_126 accounts.finite_double,
    sharpe_252 accounts.finite_double,
    smart_sharpe_252 accounts.finite_double,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    broker_equity accounts.finite_numeric,
    equity_diff accounts.finite_numeric
);
CREATE TABLE accounts.account_equity_intraday_demo (
    ts timestamp with time zone NOT NULL,
    deposit accounts.finite_numeric,
    cumulative_return accounts.finite_numeric,
    drawdown accounts.finite_numeric,
    realised_return accounts.finite_numeric,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts.account_metrics_demo (
    id text NOT NULL,
    metrics_payload text NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts.account_open_positions_demo (
    parent_id text NOT NULL,
    symbol text NOT NULL,
    side text NOT NULL,
    filled_at timestamp with time zone,
    qty accounts.finite_numeric NOT NULL,
    avg_fill accounts.finite_numeric,
    avg_px_symbol accounts.finite_numeric,
    sl_child text,
    sl_px accounts.finite_numeric,
    tp_child text,
    tp_px accounts.finite_numeric,
    mkt_px accounts.finite_numeric,
    bar_px accounts.finite_numeric,
    bar_ts timestamp with time zone,
    moved_flag text DEFAULT '—'::text NOT NULL,
    buy_value accounts.finite_numeric,
    holding_days integer,
    days_to_expire integer,
    mkt_value accounts.finite_numeric,
    profit_loss accounts.finite_numeric,
    profit_loss_lot accounts.finite_numeric,
    tp_sl_reach_pct accounts.finite_numeric,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT account_open_positions_demo_qty_check CHECK (((qty)::numeric >= (0)::numeric)),
    CONSTRAINT account_open_positions_demo_side_check CHECK ((side = ANY (ARRAY['long'::text, 'short'::text])))
);
CREATE TABLE accounts.cash_flows_demo (
    id text NOT NULL,
    ts timestamp with time zone NOT NULL,
    amount accounts.finite_numeric,
    type text NOT NULL,
    category text NOT NULL,
    description text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT category_allowed CHECK ((category = ANY (ARRAY['trade'::text, 'income'::text, 'interest'::text, 'fee'::text, 'tax'::text, 'external'::text, 'corporate'::text, 'other'::text, 'unclassified'::text])))
);
CREATE TABLE accounts.latest_prices (
    symbol text NOT NULL,
    price accounts.finite_numeric NOT NULL,
    ts timestamp with time zone NOT NULL,
    CONSTRAINT latest_prices_price_check CHECK (((price)::numeric > (0)::numeric))
);
CREATE TABLE accounts.market_schedule (
    session_date date NOT NULL,
    pre_open_utc timestamp with time zone NOT NULL,
    open_utc timestamp with time zone NOT NULL,
    close_utc timestamp with time zone NOT NULL,
    post_close_utc timestamp with time zone NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts.price_bars_1min (
    symbol text NOT NULL,
    ts timestamp with time zone NOT NULL,
    open accounts.finite_numeric NOT NULL,
    high accounts.finite_numeric NOT NULL,
    low accounts.finite_numeric NOT NULL,
    close accounts.finite_numeric NOT NULL,
    volume accounts.finite_numeric DEFAULT 0 NOT NULL
);
CREATE TABLE accounts.quarantine (
    id bigint NOT NULL,
    ts timestamp with time zone DEFAULT now() NOT NULL,
    account text,
    kind text NOT NULL,
    key text,
    raw text NOT NULL,
    error text NOT NULL
);
CREATE SEQUENCE accounts.quarantine_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE accounts.quarantine_id_seq OWNED BY accounts.quarantine.id;
CREATE TABLE accounts.reconciliations_demo (
    id text NOT NULL,
    activity_type text NOT NULL,
    transaction_time timestamp with time zone NOT NULL,
    symbol text,
    side text,
    qty accounts.finite_numeric,
    price accounts.finite_numeric,
    net_amount accounts.finite_numeric,
    execution_id uuid,
    order_id uuid,
    raw_json jsonb,
    ingested_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts.schema_version (
    scope text NOT NULL,
    version integer NOT NULL,
    description text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE accounts.spinoff_bases_demo (
    action_id text NOT NULL,
    parent text NOT NULL,
    parent_share accounts.finite_numeric NOT NULL,
    source text NOT NULL,
    set_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT spinoff_bases_demo_parent_share_check CHECK ((((parent_share)::numeric > (0)::numeric) AND ((parent_share)::numeric < (1)::numeric))),
    CONSTRAINT spinoff_bases_demo_source_check CHECK ((source = ANY (ARRAY['default'::text, 'override'::text])))
);
ALTER TABLE ONLY accounts.quarantine ALTER COLUMN id SET DEFAULT nextval('accounts.quarantine_id_seq'::regclass);
ALTER TABLE ONLY account_activities.raw_activities_demo
    ADD CONSTRAINT raw_activities_demo_pkey PRIMARY KEY (id);
ALTER TABLE ONLY account_activities.raw_orders_demo
    ADD CONSTRAINT raw_orders_demo_pkey PRIMARY KEY (id);
ALTER TABLE ONLY accounts.account_closed_demo
    ADD CONSTRAINT account_closed_demo_pkey PRIMARY KEY (entry_lot_id, exit_order_id);
ALTER TABLE ONLY accounts.account_equity_full_demo
    ADD CONSTRAINT account_equity_full_demo_pkey PRIMARY KEY (date);
ALTER TABLE ONLY accounts.account_equity_intraday_demo
    ADD CONSTRAINT account_equity_intraday_demo_pkey PRIMARY KEY (ts);
ALTER TABLE ONLY accounts.account_metrics_demo
    ADD CONSTRAINT account_metrics_demo_pkey PRIMARY KEY (id);
ALTER TABLE ONLY accounts.account_open_positions_demo
    ADD CONSTRAINT account_open_positions_demo_pkey PRIMARY KEY (parent_id);
ALTER TABLE ONLY accounts.cash_flows_demo
    ADD CONSTRAINT cash_flows_demo_pkey PRIMARY KEY (id);
ALTER TABLE ONLY accounts.latest_prices
    ADD CONSTRAINT latest_prices_pkey PRIMARY KEY (symbol);
ALTER TABLE ONLY accounts.market_schedule
    ADD CONSTRAINT market_schedule_pkey PRIMARY KEY (session_date);
ALTER TABLE ONLY accounts.price_bars_1min
    ADD CONSTRAINT price_bars_1min_pkey PRIMARY KEY (symbol, ts);
ALTER TABLE ONLY accounts.quarantine
    ADD CONSTRAINT quarantine_pkey PRIMARY KEY (id);
ALTER TABLE ONLY accounts.reconciliations_demo
    ADD CONSTRAINT reconciliations_demo_pkey PRIMARY KEY (id);
ALTER TABLE ONLY accounts.schema_version
    ADD CONSTRAINT schema_version_pkey PRIMARY KEY (scope, version);
ALTER TABLE ONLY accounts.spinoff_bases_demo
    ADD CONSTRAINT spinoff_bases_demo_pkey PRIMARY KEY (action_id);
CREATE UNIQUE INDEX ix_raw_activities_demo_exec ON account_activities.raw_activities_demo USING btree (execution_id) WHERE ((activity_type = 'FILL'::text) AND (execution_id IS NOT NULL));
CREATE INDEX ix_raw_activities_demo_time ON account_activities.raw_activities_demo USING btree (transaction_time);
CREATE INDEX ix_raw_activities_demo_type ON account_activities.raw_activities_demo USING btree (activity_type);
CREATE INDEX ix_raw_orders_demo_created ON account_activities.raw_orders_demo USING btree (created_at);
CREATE INDEX ix_raw_orders_demo_parent ON account_activities.raw_orders_demo USING btree (parent_id);
CREATE INDEX ix_raw_orders_demo_symbol ON account_activities.raw_orders_demo USING btree (symbol);
CREATE INDEX ix_raw_orders_demo_updated ON account_activities.raw_orders_demo USING btree (updated_at);
CREATE INDEX ix_account_closed_demo_exit_time ON accounts.account_closed_demo USING btree (exit_time);
CREATE INDEX ix_account_closed_demo_symbol_time ON accounts.account_closed_demo USING btree (symbol, entry_time);
CREATE INDEX ix_account_open_positions_demo_symbol ON accounts.account_open_positions_demo USING btree (symbol);
CREATE INDEX ix_cash_flows_demo_ts ON accounts.cash_flows_demo USING btree (ts);
CREATE INDEX ix_market_schedule_open ON accounts.market_schedule USING btree (open_utc);
CREATE INDEX reconciliations_demo_activity_type_idx ON accounts.reconciliations_demo USING btree (activity_type);
CREATE UNIQUE INDEX reconciliations_demo_execution_id_idx ON accounts.reconciliations_demo USING btree (execution_id) WHERE ((activity_type = 'FILL'::text) AND (execution_id IS NOT NULL));
CREATE INDEX reconciliations_demo_transaction_time_idx ON accounts.reconciliations_demo USING btree (transaction_time);

INSERT INTO accounts.schema_version (scope, version, description) VALUES
    ('shared', 1, 'market schedule, latest prices, 1-minute bars'),
    ('shared', 2, 'quarantine: changes a commit refused on their data'),
    ('account:demo', 1, 'positions, closed, equity, cash flows, metrics, raw orders/activities'),
    ('account:demo', 2, 'daily equity: broker_equity, equity_diff'),
    ('account:demo', 3, 'real broker events: activity categories, CORPORATE exits'),
    ('account:demo', 4, 'reconciliation fills in their own table, out of raw_activities'),
    ('account:demo', 5, 'spin-off bases: how each spin-off''s basis is split');
