-- Area-based inventory (issue 18): models of plot attributes fitted on LiDAR metrics
-- (fit-area-model) and their wall-to-wall predictions (predict-area-model, rasters of kind 'aba').
CREATE TABLE area_models (
    id            bigserial PRIMARY KEY,
    project_id    bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    scan_id       bigint REFERENCES scans(id) ON DELETE SET NULL,   -- the scan whose plot metrics it was fitted on
    run_id        text,                                             -- the run that computed those metrics, if known
    job_id        text,                                             -- the fit-area-model job
    attribute     text NOT NULL,                                    -- the plots' attribute (plots.attributes key)
    unit          text,
    method        text NOT NULL CHECK (method IN ('linear', 'rf')),
    metrics       text[] NOT NULL,                                  -- metrics the model reads
    resolution_m  double precision NOT NULL,                        -- grid cell side matching the plots' area
    parameters    jsonb NOT NULL DEFAULT '{}'::jsonb,               -- the model (coefficients, ranges, ...) as JSON
    validation    jsonb NOT NULL DEFAULT '{}'::jsonb,               -- cross-validation: RMSE, bias, R², pairs
    plots         bigint[] NOT NULL DEFAULT '{}',                   -- the training plots
    model         bytea,                                            -- random forests: node arrays (.npz, no pickle)
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX area_models_project_idx ON area_models (project_id, created_at DESC);
CREATE INDEX area_models_scan_idx ON area_models (scan_id);

ALTER TABLE rasters DROP CONSTRAINT IF EXISTS rasters_kind_check;
ALTER TABLE rasters ADD CONSTRAINT rasters_kind_check
    CHECK (kind IN ('dtm', 'dsm', 'chm', 'density', 'metrics', 'chm_diff', 'change', 'aba'));
