UPDATE roles SET permissions = array_remove(permissions, 'audit.read') WHERE name = 'admin';
DROP TABLE audit_events;
