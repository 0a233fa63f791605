DROP TABLE api_replicas;
