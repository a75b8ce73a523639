-- Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d/),
-- as POSTGRES_USER (swms). One database per service: no service reads another's tables.
-- Each service's schema is created by its migrations (python -m swms.migrations <service>).
CREATE DATABASE identity;
CREATE DATABASE profile;
CREATE DATABASE registration;
CREATE DATABASE review;
CREATE DATABASE certificate;
CREATE DATABASE notification;
