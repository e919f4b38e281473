-- Apex height of each tree (the highest return corrected for the distance to the apex, see
-- processes/lidar/trees.apex_heights), kept beside height_m (the highest return).
ALTER TABLE trees ADD COLUMN IF NOT EXISTS apex_height_m real;
