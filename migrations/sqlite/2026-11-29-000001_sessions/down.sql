DROP TABLE nestflux_logins;
DROP TABLE nestflux_sessions;
