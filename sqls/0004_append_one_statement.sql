-- 0004: appends check and write in ONE statement after the head lock; a lone event has its
-- own scalar function; neither append function keeps a plan that scans the events table.
--
-- Applied by eventplane.store.migrations.migrate (evtctl db migrate). Called by
-- eventplane.store.postgres: eventplane_append_one for a lone append of one event (the
-- common case: intents, one-event decisions), eventplane_append for a lone append of many.
--
-- Same outcomes and guarantee as 0001's eventplane_append (read its comment first):
--   0 appended, 1 version conflict (one row, out_stream_version = actual version), 2 every
--   id already stored, 3 some ids stored (rows = stored ids); outcomes 1-3 write nothing.
-- One difference in shape: on outcome 0 this eventplane_append returns a single row for
-- the batch (out_id NULL, the first event's version and position; the rest are
-- consecutive), where 0001 returned one row per event.
-- What changed is the cost. 0001 ran seven statements (each with its own executor start and
-- snapshot); these run two: the head-row lock, then one statement whose CTEs do the
-- idempotency probe, the version probe, the insert, the head update and the doorbell. The
-- one-event function takes scalars: decoding nine one-element arrays and unnesting them cost
-- ~70 µs per call, a sixth of a whole fsync'ed append.
--
-- Why the lock stays a statement of its own: in READ COMMITTED every statement reads one
-- snapshot taken when it starts. Taking the lock first means the second statement's
-- snapshot is taken after the previous holder committed, so its id and version probes see
-- every earlier append — exactly as in 0001. (Locking inside the one statement would check
-- versions against a snapshot older than the lock.)
--
-- Why enable_seqscan = off: PL/pgSQL caches each statement's plan for the life of the
-- connection, and a plan made while the table is nearly empty (a fresh deployment) picks a
-- sequential scan for the id probe and keeps it as the table grows — a lone append then
-- read the whole table (measured: 0.5 ms at 3,000 rows, growing linearly). Every lookup
-- here is by a unique index, so forbidding the scan costs nothing when the table is small
-- and keeps appends O(log n) when it is large. Autoanalyze would eventually invalidate the
-- plan; this does not wait for it.
CREATE OR REPLACE FUNCTION eventplane_append_one(
    p_tenant         text,
    p_kind           text,
    p_name           text,
    p_expected       bigint,          -- -1 = ANY, 0 = NO_STREAM, n = exactly n
    p_id             uuid,
    p_type           text,
    p_category       text,
    p_actor          text,
    p_correlation_id uuid,
    p_causation_id   uuid,
    p_generation     bigint,
    p_occurred_at    timestamptz,
    p_body           jsonb
) RETURNS TABLE (
    outcome            smallint,
    out_id             uuid,
    out_stream_version bigint,
    out_position       bigint,
    out_recorded_at    timestamptz
)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_head bigint;
BEGIN
    SELECT h."position" INTO v_head FROM eventplane_head h WHERE h.id = 1 FOR UPDATE;

    RETURN QUERY
    WITH stored AS (
        SELECT e.id, e.stream_version, e."position", e.recorded_at
          FROM eventplane_events e
         WHERE e.id = p_id
    ), cur AS (
        SELECT coalesce(max(e.stream_version), 0) AS v
          FROM eventplane_events e
         WHERE e.tenant = p_tenant AND e.kind = p_kind AND e.name = p_name
    ), accepted AS (  -- one row when the append goes ahead, none otherwise
        SELECT cur.v, clock_timestamp() AS now
          FROM cur
         WHERE NOT EXISTS (SELECT FROM stored) AND (p_expected < 0 OR p_expected = cur.v)
    ), ins AS (
        INSERT INTO eventplane_events AS t (
            id, "position", tenant, kind, name, stream_version, type, category, actor,
            correlation_id, causation_id, generation, occurred_at, recorded_at, body)
        SELECT p_id, v_head + 1, p_tenant, p_kind, p_name, a.v + 1, p_type, p_category,
               p_actor, p_correlation_id, p_causation_id, p_generation, p_occurred_at, a.now,
               p_body
          FROM accepted a
        RETURNING t.id, t.stream_version, t."position", t.recorded_at
    ), head AS (
        -- Doorbell for followers; delivered at commit, never for a rolled-back append.
        UPDATE eventplane_head h SET "position" = v_head + 1
          FROM accepted
         WHERE h.id = 1
        RETURNING pg_notify('eventplane_events', '')
    )
    SELECT 0::smallint, i.id, i.stream_version, i."position", i.recorded_at
      FROM ins i, head
    UNION ALL
    SELECT 1::smallint, NULL::uuid, cur.v, NULL::bigint, NULL::timestamptz
      FROM cur
     WHERE NOT EXISTS (SELECT FROM stored) AND p_expected >= 0 AND p_expected <> cur.v
    UNION ALL
    SELECT 2::smallint, s.id, s.stream_version, s."position", s.recorded_at
      FROM stored s;
END;
$$;

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
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_head bigint;
BEGIN
    SELECT h."position" INTO v_head FROM eventplane_head h WHERE h.id = 1 FOR UPDATE;

    RETURN QUERY
    WITH stored AS (
        SELECT e.id, e.stream_version, e."position", e.recorded_at
          FROM eventplane_events e
         WHERE e.id = ANY (p_ids)
    ), cur AS (
        SELECT coalesce(max(e.stream_version), 0) AS v
          FROM eventplane_events e
         WHERE e.tenant = p_tenant AND e.kind = p_kind AND e.name = p_name
    ), accepted AS (  -- one row when the append goes ahead, none otherwise
        SELECT cur.v, clock_timestamp() AS now
          FROM cur
         WHERE NOT EXISTS (SELECT FROM stored) AND (p_expected < 0 OR p_expected = cur.v)
    ), ins AS (
        INSERT INTO eventplane_events AS t (
            id, "position", tenant, kind, name, stream_version, type, category, actor,
            correlation_id, causation_id, generation, occurred_at, recorded_at, body)
        SELECT u.id, v_head + u.ord, p_tenant, p_kind, p_name, a.v + u.ord, u.type,
               u.category, u.actor, u.correlation_id, u.causation_id, u.generation,
               u.occurred_at, a.now, u.body
          FROM accepted a,
               unnest(p_ids, p_types, p_categories, p_actors, p_correlation_ids,
                      p_causation_ids, p_generations, p_occurred_at, p_bodies)
               WITH ORDINALITY AS u(id, type, category, actor, correlation_id, causation_id,
                                    generation, occurred_at, body, ord)
    ), head AS (
        -- Doorbell for followers; delivered at commit, never for a rolled-back append.
        UPDATE eventplane_head h SET "position" = v_head + cardinality(p_ids)
          FROM accepted
         WHERE h.id = 1
        RETURNING pg_notify('eventplane_events', '')
    )
    -- Appended: ONE row for the whole batch (out_id NULL): the first event's version and
    -- position (the others follow consecutively) and the common recorded_at. Returning a
    -- row per event cost more than the inserts for a batch of 100.
    SELECT 0::smallint, NULL::uuid, a.v + 1, v_head + 1, a.now
      FROM accepted a, head
    UNION ALL
    SELECT 1::smallint, NULL::uuid, cur.v, NULL::bigint, NULL::timestamptz
      FROM cur
     WHERE NOT EXISTS (SELECT FROM stored) AND p_expected >= 0 AND p_expected <> cur.v
    UNION ALL
    SELECT (CASE WHEN (SELECT count(*) FROM stored) = cardinality(p_ids) THEN 2 ELSE 3
            END)::smallint,
           s.id, s.stream_version, s."position", s.recorded_at
      FROM stored s
     ORDER BY 4;
END;
$$;

GRANT EXECUTE ON FUNCTION eventplane_append_one(
    text, text, text, bigint, uuid, text, text, text, uuid, uuid, bigint, timestamptz, jsonb)
    TO eventplane_app;

-- The set-based append (0002) has the same exposure: its generic plan (0003) is made on
-- first use, often against an empty table.
ALTER FUNCTION eventplane_append_many(
    text[], text[], text[], bigint[], integer[], uuid[], text[], text[], text[], uuid[],
    uuid[], bigint[], timestamptz[], jsonb[])
    SET enable_seqscan = off;
