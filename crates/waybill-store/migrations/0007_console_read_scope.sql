-- The operator console's `read` scope (docs/security.md, docs/console.md): a key that sees
-- everything of its tenant in the console and changes nothing. 0004 listed the scopes a key may
-- hold in a check constraint; this widens the list by one name and changes no row. (The
-- number leaves 0006 free: migrations apply by version, and gaps are allowed.)
alter table api_keys
    drop constraint api_keys_scopes_check;
alter table api_keys
    add constraint api_keys_scopes_check check (cardinality(scopes) > 0 and scopes <@
        array ['shipments:write', 'shipments:read', 'admin', 'read']::text[]);
