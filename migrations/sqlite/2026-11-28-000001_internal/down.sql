DROP TABLE nestflux_dev_keys;
DROP TABLE nestflux_users;
