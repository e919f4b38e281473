-- A CRS given by the user at upload (e.g. 'EPSG:2992') for files that carry none.
ALTER TABLE scans ADD COLUMN crs_override text;
