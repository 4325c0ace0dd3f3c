-- 0001: the event store — events, the position head, checkpoints, leases, the append
-- function, append-only triggers, row-level security by tenant and the application role.
--
-- Applied by eventplane.store.migrations.migrate (evtctl db migrate) inside one transaction,
-- under an advisory lock, and recorded in eventplane_migrations. The column shapes mirror
-- eventplane/store/tables.py (a test compares them).

-- Events: key columns for filtering and indexes, one jsonb body for the rest.
CREATE TABLE IF NOT EXISTS eventplane_events (
    id              uuid        NOT NULL,
    "position"      bigint      NOT NULL,
    tenant          text        NOT NULL,
    kind            text        NOT NULL,
    name            text        NOT NULL,
    stream_version  bigint      NOT NULL,
    type            text        NOT NULL,
    category        text        NOT NULL,
    actor           text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    generation      bigint      NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    body            jsonb       NOT NULL,
    CONSTRAINT eventplane_events_pkey PRIMARY KEY (id),
    CONSTRAINT eventplane_events_position_key UNIQUE ("position"),
    CONSTRAINT eventplane_events_stream_key UNIQUE (tenant, kind, name, stream_version),
    CONSTRAINT eventplane_events_stream_version_check CHECK (stream_version >= 1),
    CONSTRAINT eventplane_events_position_check CHECK ("position" >= 1),
    CONSTRAINT eventplane_events_category_check CHECK (category IN ('intent', 'internal', 'fact'))
);
-- Tenant-scoped position scans (read_all / last_position of a tenant store).
CREATE INDEX IF NOT EXISTS eventplane_events_tenant_position_idx
    ON eventplane_events (tenant, "position");

-- The one row whose lock serializes position assignment (see eventplane_append).
CREATE TABLE IF NOT EXISTS eventplane_head (
    id          smallint NOT NULL,
    "position"  bigint   NOT NULL,
    CONSTRAINT eventplane_head_pkey PRIMARY KEY (id),
    CONSTRAINT eventplane_head_singleton CHECK (id = 1)
);
INSERT INTO eventplane_head (id, "position") VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS eventplane_checkpoints (
    name        text        NOT NULL,
    "position"  bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT eventplane_checkpoints_pkey PRIMARY KEY (name)
);

CREATE TABLE IF NOT EXISTS eventplane_leases (
    name        text        NOT NULL,
    holder      text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    CONSTRAINT eventplane_leases_pkey PRIMARY KEY (name)
);

-- Append-only for real: no UPDATE, DELETE or TRUNCATE, whoever asks (owner and superuser too).
CREATE OR REPLACE FUNCTION eventplane_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventplane_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'EP403',
              HINT = 'append a new event that records the change instead';
END;
$$;
DROP TRIGGER IF EXISTS eventplane_events_no_update_delete ON eventplane_events;
CREATE TRIGGER eventplane_events_no_update_delete
    BEFORE UPDATE OR DELETE ON eventplane_events
    FOR EACH ROW EXECUTE FUNCTION eventplane_reject_change();
DROP TRIGGER IF EXISTS eventplane_events_no_truncate ON eventplane_events;
CREATE TRIGGER eventplane_events_no_truncate
    BEFORE TRUNCATE ON eventplane_events
    FOR EACH STATEMENT EXECUTE FUNCTION eventplane_reject_change();

-- Row-level security by tenant: the second wall behind the store's own WHERE tenant = ….
-- Each connection states its scope in the eventplane.tenant setting (a tenant name, or '*'
-- for system workers); no setting means no rows. FORCE makes it apply to the table owner;
-- superusers still bypass RLS, so production connects as a member of eventplane_app.
ALTER TABLE eventplane_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE eventplane_events FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS eventplane_events_tenant ON eventplane_events;
CREATE POLICY eventplane_events_tenant ON eventplane_events
    USING (current_setting('eventplane.tenant', true) IN (tenant, '*'))
    WITH CHECK (current_setting('eventplane.tenant', true) IN (tenant, '*'));

-- append: version check, idempotency check, position assignment, insert and doorbell in ONE
-- round trip. Outcomes: 0 appended (rows = the new events), 1 version conflict (one row,
-- out_stream_version = actual version), 2 every id already stored (rows = stored ids),
-- 3 some ids stored, some new (rows = stored ids). Outcomes 1-3 write nothing.
--
-- Global order without skips: the first statement locks the single eventplane_head row and
-- the lock is held until COMMIT/ROLLBACK. Positions are handed out only while holding it, so
-- transaction N+1 cannot take a position until transaction N has committed (or rolled
-- back, in which case the head row update rolls back too and the positions are reused). A
-- row lock is released after the commit becomes visible, hence position order = visibility
-- order: a reader that has seen position P can never later see a new row below P.
CREATE OR REPLACE FUNCTION eventplane_append(
    p_tenant          text,
    p_kind            text,
    p_name            text,
    p_expected        bigint,          -- -1 = ANY, 0 = NO_STREAM, n = exactly n
    p_ids             uuid[],
    p_types           text[],
    p_categories      text[],
    p_actors          text[],
    p_correlation_ids uuid[],
    p_causation_ids   uuid[],
    p_generations     bigint[],
    p_occurred_at     timestamptz[],
    p_bodies          jsonb[]
) RETURNS TABLE (
    outcome            smallint,
    out_id             uuid,
    out_stream_version bigint,
    out_position       bigint,
    out_recorded_at    timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_count   integer := cardinality(p_ids);
    v_head    bigint;
    v_current bigint;
    v_stored  integer;
    v_now     timestamptz;
BEGIN
    SELECT h."position" INTO v_head FROM eventplane_head h WHERE h.id = 1 FOR UPDATE;

    SELECT count(*) INTO v_stored FROM eventplane_events e WHERE e.id = ANY (p_ids);
    IF v_stored > 0 THEN
        RETURN QUERY
            SELECT (CASE WHEN v_stored = v_count THEN 2 ELSE 3 END)::smallint,
                   e.id, e.stream_version, e."position", e.recorded_at
              FROM eventplane_events e WHERE e.id = ANY (p_ids);
        RETURN;
    END IF;

    SELECT coalesce(max(e.stream_version), 0) INTO v_current
      FROM eventplane_events e
     WHERE e.tenant = p_tenant AND e.kind = p_kind AND e.name = p_name;
    IF p_expected >= 0 AND p_expected <> v_current THEN
        RETURN QUERY SELECT 1::smallint, NULL::uuid, v_current, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;

    v_now := clock_timestamp();
    INSERT INTO eventplane_events (
        id, "position", tenant, kind, name, stream_version, type, category, actor,
        correlation_id, causation_id, generation, occurred_at, recorded_at, body)
    SELECT u.id, v_head + u.ord, p_tenant, p_kind, p_name, v_current + u.ord, u.type,
           u.category, u.actor, u.correlation_id, u.causation_id, u.generation,
           u.occurred_at, v_now, u.body
      FROM unnest(p_ids, p_types, p_categories, p_actors, p_correlation_ids, p_causation_ids,
                  p_generations, p_occurred_at, p_bodies)
           WITH ORDINALITY AS u(id, type, category, actor, correlation_id, causation_id,
                                generation, occurred_at, body, ord);
    UPDATE eventplane_head SET "position" = v_head + v_count WHERE id = 1;
    -- Doorbell for followers; delivered at commit, never for a rolled-back append.
    PERFORM pg_notify('eventplane_events', '');
    RETURN QUERY
        SELECT 0::smallint, u.id, v_current + u.ord, v_head + u.ord, v_now
          FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord);
END;
$$;

-- The application role: INSERT/SELECT on events and nothing else there. Roles are
-- cluster-wide and several databases may migrate at once, so tolerate "already exists".
DO $$
BEGIN
    CREATE ROLE eventplane_app NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END;
$$;
REVOKE ALL ON eventplane_events, eventplane_head, eventplane_checkpoints, eventplane_leases
    FROM PUBLIC;
GRANT SELECT, INSERT ON eventplane_events TO eventplane_app;
GRANT SELECT, UPDATE ON eventplane_head TO eventplane_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON eventplane_checkpoints, eventplane_leases
    TO eventplane_app;
GRANT EXECUTE ON FUNCTION eventplane_append(
    text, text, text, bigint, uuid[], text[], text[], text[], uuid[], uuid[], bigint[],
    timestamptz[], jsonb[]) TO eventplane_app;
