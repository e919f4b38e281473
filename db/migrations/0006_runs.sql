-- Runs are kept (issue 17). Every successful job that makes products (rasters, trees,
-- crowns, plot metrics) is a run, identified by its top-level job's id; a re-run adds a
-- run instead of replacing the earlier one. See server/runs/ and db/runs.py.
CREATE TABLE runs (
    id             text PRIMARY KEY,                 -- the (top-level) job's identifier
    scan_id        bigint NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
    project_id     bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    process_id     text NOT NULL,
    parameters     jsonb NOT NULL DEFAULT '{}'::jsonb, -- the job's inputs, as validated
    engine_version text NOT NULL,                    -- processes.lidar.version at commit
    products       text[] NOT NULL DEFAULT '{}',     -- trees, dtm, chm, metrics, plot_metrics, ...
    extents        jsonb NOT NULL DEFAULT '{}'::jsonb, -- collection -> [minx, miny, maxx, maxy] (CRS84)
    created_at     timestamptz NOT NULL DEFAULT now() -- commit time: the latest run is current
);
CREATE INDEX runs_scan_idx ON runs (scan_id, created_at DESC);
CREATE INDEX runs_project_idx ON runs (project_id);

-- The scan's latest run (no foreign key: a scan's deletion cascades to its runs).
ALTER TABLE scans ADD COLUMN current_run_id text;

ALTER TABLE rasters ADD COLUMN run_id text;
CREATE INDEX rasters_run_idx ON rasters (run_id, kind);
ALTER TABLE trees ADD COLUMN run_id text;
ALTER TABLE trees ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();   -- the run's commit time
CREATE INDEX trees_run_idx ON trees (run_id, id);        -- a run's page: ?run=<job id>
CREATE INDEX trees_created_idx ON trees (created_at);
ALTER TABLE crowns ADD COLUMN run_id text;
ALTER TABLE crowns ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX crowns_run_idx ON crowns (run_id, id);
CREATE INDEX crowns_created_idx ON crowns (created_at);

-- Metrics of each plot per run; plots.metrics keeps the latest run's.
CREATE TABLE plot_metrics (
    run_id  text NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    plot_id bigint NOT NULL REFERENCES plots(id) ON DELETE CASCADE,
    metrics jsonb NOT NULL,
    PRIMARY KEY (run_id, plot_id)
);
CREATE INDEX plot_metrics_plot_idx ON plot_metrics (plot_id);

-- What each scan shows by default: per product, its latest run.
CREATE VIEW current_products AS
SELECT DISTINCT ON (r.scan_id, p.product) r.scan_id, p.product, r.id AS run_id
FROM runs r CROSS JOIN LATERAL unnest(r.products) AS p(product)
ORDER BY r.scan_id, p.product, r.created_at DESC, r.id DESC;

-- Products made before runs were kept: one run per scan that has any, so the scan's
-- history starts with them (the job id is in the raster file names, not recoverable for trees).
INSERT INTO runs (id, scan_id, project_id, process_id, engine_version, products, created_at)
SELECT 'legacy-scan-' || s.id, s.id, s.project_id, 'legacy', 'before-runs',
       ARRAY(SELECT DISTINCT kind FROM rasters WHERE scan_id = s.id
             UNION SELECT 'trees' WHERE EXISTS (SELECT 1 FROM trees WHERE scan_id = s.id)),
       coalesce((SELECT max(created_at) FROM rasters WHERE scan_id = s.id), now())
FROM scans s
WHERE EXISTS (SELECT 1 FROM rasters WHERE scan_id = s.id) OR EXISTS (SELECT 1 FROM trees WHERE scan_id = s.id);
UPDATE rasters SET run_id = 'legacy-scan-' || scan_id WHERE scan_id IS NOT NULL;
UPDATE trees SET run_id = 'legacy-scan-' || scan_id;
UPDATE crowns SET run_id = 'legacy-scan-' || scan_id;
UPDATE scans s SET current_run_id = r.id FROM runs r WHERE r.scan_id = s.id;

-- Extents per collection and project, kept current by the triggers below: an insert
-- widens the box (in the inserting transaction, from the rows it inserted); an update or
-- a delete marks it for recomputation (`valid` false), which the server does once
-- (server/extents.py). `gen` counts changes, so a recomputation racing a change never
-- records a box that misses it.
CREATE TABLE collection_extents (
    collection text NOT NULL,
    project_id bigint NOT NULL,
    bbox       double precision[],          -- [minx, miny, maxx, maxy] CRS84; NULL: no geometry
    t_min      timestamptz,
    t_max      timestamptz,
    valid      boolean NOT NULL,
    gen        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, project_id)
);

CREATE FUNCTION canopy_extent_changed() RETURNS trigger LANGUAGE plpgsql AS $$
-- TG_ARGV: geometry column, column of the earliest time, column of the latest time
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format(
            'INSERT INTO collection_extents AS e (collection, project_id, bbox, t_min, t_max, valid) '
            'SELECT %L, project_id, CASE WHEN b IS NOT NULL THEN '
            '       ARRAY[ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)] END, t0, t1, true '
            'FROM (SELECT project_id, ST_Extent(%I) AS b, min(%I) AS t0, max(%I) AS t1 '
            '      FROM changed_rows GROUP BY project_id) n '
            'ON CONFLICT (collection, project_id) DO UPDATE SET gen = e.gen + 1, '
            '  bbox = CASE WHEN e.bbox IS NULL THEN EXCLUDED.bbox WHEN EXCLUDED.bbox IS NULL THEN e.bbox '
            '         ELSE ARRAY[least(e.bbox[1], EXCLUDED.bbox[1]), least(e.bbox[2], EXCLUDED.bbox[2]), '
            '                    greatest(e.bbox[3], EXCLUDED.bbox[3]), greatest(e.bbox[4], EXCLUDED.bbox[4])] END, '
            '  t_min = least(e.t_min, EXCLUDED.t_min), t_max = greatest(e.t_max, EXCLUDED.t_max)',
            TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]);
    ELSE
        EXECUTE format(
            'INSERT INTO collection_extents AS e (collection, project_id, valid) '
            'SELECT DISTINCT %L, project_id, false FROM changed_rows %s '
            'ON CONFLICT (collection, project_id) DO UPDATE SET valid = false, gen = e.gen + 1',
            TG_TABLE_NAME, CASE WHEN TG_OP = 'UPDATE'
                                THEN format('UNION SELECT %L, project_id, false FROM new_rows', TG_TABLE_NAME)
                                ELSE '' END);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    spec text[];
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[['plots', 'geom', 'created_at', 'updated_at'],
                                        ['scans', 'footprint', 'acquired_at', 'acquired_at'],
                                        ['trees', 'geom', 'created_at', 'created_at'],
                                        ['crowns', 'geom', 'created_at', 'created_at'],
                                        ['rasters', 'footprint', 'created_at', 'created_at']] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS changed_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION canopy_extent_changed(%L, %L, %L)',
                       spec[1] || '_extent_insert', spec[1], spec[2], spec[3], spec[4]);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING OLD TABLE AS changed_rows '
                       'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION canopy_extent_changed(%L, %L, %L)',
                       spec[1] || '_extent_update', spec[1], spec[2], spec[3], spec[4]);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS changed_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION canopy_extent_changed(%L, %L, %L)',
                       spec[1] || '_extent_delete', spec[1], spec[2], spec[3], spec[4]);
        EXECUTE format('INSERT INTO collection_extents (collection, project_id, bbox, t_min, t_max, valid) '
                       'SELECT %L, project_id, CASE WHEN b IS NOT NULL THEN '
                       '       ARRAY[ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)] END, t0, t1, true '
                       'FROM (SELECT project_id, ST_Extent(%I) AS b, min(%I) AS t0, max(%I) AS t1 '
                       '      FROM %I GROUP BY project_id) n',
                       spec[1], spec[2], spec[3], spec[4], spec[1]);
    END LOOP;
END $$;
