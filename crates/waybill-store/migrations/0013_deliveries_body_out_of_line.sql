-- A delivery's body (the exact bytes POSTed, about 1 KB) is stored out of line, in the table's
-- TOAST relation, instead of in the row.
--
-- A delivery row is written three times: created by the fan-out, claimed (attempts and the
-- lease), and given its outcome. Postgres writes each update as a new version of the whole row,
-- so the body was copied twice more into the table and the WAL. Stored out of line, an update
-- carries an 18-byte pointer to the unchanged body instead of the body.
--
-- Only rows written from now on are stored this way; existing rows keep their bodies inline
-- until they are deleted. Both are read the same way, by every version.
alter table deliveries alter column body set storage external;
alter table deliveries set (toast_tuple_target = 128);
