# PostgreSQL 15 on RDS: Multi-AZ, encrypted with the project key, private, with a
# parameter group that bounds statements and logs slow ones. The master password is
# managed by RDS in Secrets Manager (never in Terraform state).
resource "aws_db_subnet_group" "main" {
  name       = "till-${var.environment}"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_security_group" "db" {
  name        = "till-${var.environment}-db"
  description = "PostgreSQL from the EKS nodes only"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "PostgreSQL from the cluster"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_eks_cluster.main.vpc_config[0].cluster_security_group_id]
  }
}

resource "aws_db_parameter_group" "main" {
  name   = "till-${var.environment}-pg15"
  family = "postgres15"

  parameter {
    name  = "statement_timeout"
    value = tostring(var.db_statement_timeout_ms)
  }
  parameter {
    name  = "idle_in_transaction_session_timeout"
    value = "60000"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  parameter {
    # Till's projector reads up to pg_snapshot_xmin: long transactions anywhere on the
    # cluster delay projections, so they are logged.
    name  = "log_lock_waits"
    value = "1"
  }
  parameter {
    # Plaintext connections are refused. Till connects with TLS (sslmode verify-full
    # against the RDS CA bundle, docs/operations.md), as IAM database authentication
    # also requires.
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  identifier                          = "till-${var.environment}"
  engine                              = "postgres"
  engine_version                      = "15"
  instance_class                      = var.db_instance_class
  allocated_storage                   = var.db_allocated_storage
  max_allocated_storage               = var.db_allocated_storage * 5
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.till.arn
  db_name                             = "till"
  username                            = "till"
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = aws_kms_key.till.arn
  multi_az                            = true
  db_subnet_group_name                = aws_db_subnet_group.main.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  parameter_group_name                = aws_db_parameter_group.main.name
  publicly_accessible                 = false
  backup_retention_period             = 14
  deletion_protection                 = true
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.till.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "till-${var.environment}-final"

  # The CA of the server certificate, pinned so it changes only by an edit here; every
  # current RDS CA is in the global bundle Till verifies against (TILL_DB_CA_FILE).
  ca_cert_identifier = var.db_ca_cert_identifier
}
