DROP TABLE nestflux_secrets;
