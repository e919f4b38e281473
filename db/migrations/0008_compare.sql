-- The compare process (issue 17) keeps two rasters: the CHM difference (after - before)
-- and the change-class map. rasters.kind is checked against a list (0001): widen it.
ALTER TABLE rasters DROP CONSTRAINT IF EXISTS rasters_kind_check;
ALTER TABLE rasters ADD CONSTRAINT rasters_kind_check
    CHECK (kind IN ('dtm', 'dsm', 'chm', 'density', 'metrics', 'chm_diff', 'change'));
