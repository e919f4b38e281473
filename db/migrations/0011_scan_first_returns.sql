-- First returns per m² of a scan's occupied area, measured at ingestion (issue 29): a run
-- chooses its CHM cell from it before its tiles go out to other workers.
ALTER TABLE scans ADD COLUMN first_returns_m2 double precision;
