DROP TABLE nestflux_audit;
