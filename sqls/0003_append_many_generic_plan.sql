-- 0003: eventplane_append_many keeps one generic plan for its statements.
--
-- Applied by eventplane.store.migrations.migrate (evtctl db migrate). The set-based append
-- (0002) is one large statement whose parameters are arrays; under the default
-- plan_cache_mode PL/pgSQL re-plans it for every call (custom plans look cheaper for array
-- arguments), which cost ~1 ms per call — more than the work itself. The generic plan
-- (index lookups by id and by stream, a bulk insert) suits every batch size.
ALTER FUNCTION eventplane_append_many(
    text[], text[], text[], bigint[], integer[], uuid[], text[], text[], text[], uuid[],
    uuid[], bigint[], timestamptz[], jsonb[])
    SET plan_cache_mode = force_generic_plan;
