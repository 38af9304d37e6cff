-- The learned set ranks by recent traffic, and what exists above what does not.
--
-- `score` is a decaying count of the edge's fetches: each flush multiplies it by
-- 600 / (600 + seconds since the previous fetch) before adding its own, and the warmer ranks by
-- score * 600 / (600 + seconds since the last fetch): a fetch ten minutes old weighs half, an hour
-- old a seventh, and steady traffic settles at about ten minutes' worth of fetches. A page that was
-- hot yesterday no longer outranks one hot now. (Arithmetic only: SQLite has no exp().)
-- `found` says whether the latest answer was one that exists (2xx/304): a path the origin answers
-- `404` is ranked below every found one, so ids that do not exist, however often they are asked
-- for, never displace a page that does.
ALTER TABLE learned_paths ADD COLUMN score DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE learned_paths ADD COLUMN found BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE learned_paths SET score = fetches;
-- The rank depends on the time of reading; the table is bounded (WARM_LEARNED_MAX), so it is sorted.
DROP INDEX learned_paths_rank;
