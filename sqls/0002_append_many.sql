-- 0002: eventplane_append_many — many appends (each one stream, each with its own expected
-- version) in ONE set-based call: one head-row lock, one idempotency lookup, one version
-- lookup, one bulk insert, one head update, one doorbell.
--
-- Applied by eventplane.store.migrations.migrate (evtctl db migrate). Called by
-- eventplane.store.postgres's group commit when the queued appends touch distinct streams
-- and distinct ids (otherwise later appends must see earlier ones' rows, and it calls
-- eventplane_append once per append as before). Outcomes per call are those of
-- eventplane_append (0 appended, 1 version conflict, 2 all ids stored, 3 some stored);
-- calls with outcome 1-3 write nothing, the others still commit.
--
-- Global order without skips: exactly as in 0001 — the head row is locked first and held
-- to COMMIT/ROLLBACK, positions are handed out from it while it is held, and only to the
-- events actually inserted (consecutive, in argument order), so no position is skipped.
CREATE OR REPLACE FUNCTION eventplane_append_many(
    p_tenants         text[],          -- per call
    p_kinds           text[],
    p_names           text[],
    p_expected        bigint[],        -- -1 = ANY, 0 = NO_STREAM, n = exactly n
    p_calls           integer[],       -- per event: its call's index (0-based)
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
    call               integer,
    outcome            smallint,
    out_id             uuid,
    out_stream_version bigint,
    out_position       bigint,
    out_recorded_at    timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_head bigint;
    v_now  timestamptz := clock_timestamp();
BEGIN
    SELECT h."position" INTO v_head FROM eventplane_head h WHERE h.id = 1 FOR UPDATE;

    RETURN QUERY
    WITH calls AS (
        SELECT (c.ord - 1)::integer AS call, c.tenant, c.kind, c.name, c.expected
          FROM unnest(p_tenants, p_kinds, p_names, p_expected)
               WITH ORDINALITY AS c(tenant, kind, name, expected, ord)
    ), evs AS (
        SELECT u.*, row_number() OVER (PARTITION BY u.call ORDER BY u.ord) AS k
          FROM unnest(p_calls, p_ids, p_types, p_categories, p_actors, p_correlation_ids,
                      p_causation_ids, p_generations, p_occurred_at, p_bodies)
               WITH ORDINALITY AS u(call, id, type, category, actor, correlation_id,
                                    causation_id, generation, occurred_at, body, ord)
    ), verdict AS (
        SELECT c.call, c.tenant, c.kind, c.name, c.expected,
               (SELECT count(*) FROM evs e JOIN eventplane_events s ON s.id = e.id
                 WHERE e.call = c.call) AS stored,
               (SELECT count(*) FROM evs e WHERE e.call = c.call) AS total,
               (SELECT coalesce(max(x.stream_version), 0) FROM eventplane_events x
                 WHERE x.tenant = c.tenant AND x.kind = c.kind AND x.name = c.name) AS cur
          FROM calls c
    ), accepted AS (
        SELECT e.call, e.id, e.type, e.category, e.actor, e.correlation_id, e.causation_id,
               e.generation, e.occurred_at, e.body, v.tenant, v.kind, v.name,
               v.cur + e.k AS stream_version,
               v_head + row_number() OVER (ORDER BY e.ord) AS "position"
          FROM evs e JOIN verdict v ON v.call = e.call
         WHERE v.stored = 0 AND (v.expected < 0 OR v.expected = v.cur)
    ), ins AS (
        INSERT INTO eventplane_events (
            id, "position", tenant, kind, name, stream_version, type, category, actor,
            correlation_id, causation_id, generation, occurred_at, recorded_at, body)
        SELECT a.id, a."position", a.tenant, a.kind, a.name, a.stream_version, a.type,
               a.category, a.actor, a.correlation_id, a.causation_id, a.generation,
               a.occurred_at, v_now, a.body
          FROM accepted a
    ), head AS (
        UPDATE eventplane_head h
           SET "position" = v_head + (SELECT count(*) FROM accepted)
         WHERE h.id = 1
    )
    SELECT a.call, 0::smallint, a.id, a.stream_version, a."position", v_now
      FROM accepted a
    UNION ALL
    SELECT v.call, 1::smallint, NULL::uuid, v.cur, NULL::bigint, NULL::timestamptz
      FROM verdict v
     WHERE v.stored = 0 AND v.expected >= 0 AND v.expected <> v.cur
    UNION ALL
    SELECT v.call, (CASE WHEN v.stored = v.total THEN 2 ELSE 3 END)::smallint,
           s.id, s.stream_version, s."position", s.recorded_at
      FROM verdict v JOIN evs e ON e.call = v.call JOIN eventplane_events s ON s.id = e.id
     WHERE v.stored > 0
     ORDER BY 1, 4;

    -- Doorbell for followers; delivered at commit (may ring when every call conflicted).
    PERFORM pg_notify('eventplane_events', '');
END;
$$;

GRANT EXECUTE ON FUNCTION eventplane_append_many(
    text[], text[], text[], bigint[], integer[], uuid[], text[], text[], text[], uuid[],
    uuid[], bigint[], timestamptz[], jsonb[]) TO eventplane_app;
