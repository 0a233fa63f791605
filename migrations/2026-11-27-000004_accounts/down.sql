DROP TABLE external_identities;
DROP TABLE refresh_tokens;
