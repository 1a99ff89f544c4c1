-- Included by the scripts beside it (`\ir fill-outbox.sql`): 200,000 changes of about 1 KB (a
-- body with five history entries) in the scratch `outbox`, every one in `outbox_to_publish`,
-- both analyzed.
insert into outbox (shipment_id, version, payload)
select g, 1, jsonb_build_object('type', 'shipment.status_changed', 'history',
       (select jsonb_agg(jsonb_build_object('event_id', md5(g::text || h::text), 'status', 'InTransit',
                                            'location', 'Sydney NSW Australia', 'occurred_at', now()))
        from generate_series(1, 5) h))
from generate_series(1, 200000) g;
insert into outbox_to_publish select id from outbox;
vacuum analyze outbox;
vacuum analyze outbox_to_publish;
