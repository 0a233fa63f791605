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

# Settings every instance gets, the primary and its read replicas alike.
locals {
  db_parameters = [
    {
      name  = "statement_timeout"
      value = tostring(var.db_statement_timeout_ms)
    },
    {
      name  = "idle_in_transaction_session_timeout"
      value = "60000"
    },
    {
      name  = "log_min_duration_statement"
      value = "500"
    },
    {
      # The projector commits without waiting for the flush (synchronous_commit off for
      # derived data), and replicas receive only flushed WAL: the WAL writer's round
      # (200 ms by default) would add up to that to every read through a replica.
      name  = "wal_writer_delay"
      value = "10"
    },
    {
      # Till's projector reads up to pg_snapshot_xmin: long transactions anywhere on the
      # cluster delay projections, so they are logged.
      name  = "log_lock_waits"
      value = "1"
    },
    {
      # Plaintext connections are refused. Till connects with TLS (sslmode verify-full
      # against the RDS CA bundle, docs/operations.md), as IAM database authentication
      # also requires.
      name  = "rds.force_ssl"
      value = "1"
    },
  ]
}

resource "aws_db_parameter_group" "main" {
  name   = "till-${var.environment}-pg15"
  family = "postgres15"

  dynamic "parameter" {
    for_each = local.db_parameters
    content {
      name  = parameter.value.name
      value = parameter.value.value
    }
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

# Streaming read replicas (read_replica_count, none by default): `till serve` reads the
# read models from them (TILL_READ_DATABASE_URLS, docs/operations.md "Read replicas");
# everything that writes stays on the primary. Same engine, storage encryption key,
# security group, TLS settings and CA as the primary; no backups or Multi-AZ of their own
# (they hold nothing the primary lacks: a lost replica is rebuilt from it, and Till reads
# from the primary meanwhile).
resource "aws_db_parameter_group" "replica" {
  count  = var.read_replica_count > 0 ? 1 : 0
  name   = "till-${var.environment}-pg15-replica"
  family = "postgres15"

  dynamic "parameter" {
    for_each = local.db_parameters
    content {
      name  = parameter.value.name
      value = parameter.value.value
    }
  }
  parameter {
    # The replica tells the primary which rows its queries still see, so vacuum on the
    # primary does not remove them and a long read is not cancelled by the replay
    # ("canceling statement due to conflict with recovery"). The cost: a long query on a
    # replica holds back vacuum on the primary (bounded by statement_timeout above).
    name  = "hot_standby_feedback"
    value = "1"
  }
  parameter {
    # When replay still conflicts with a query (a lock, a dropped table), replay waits
    # this long for it, then cancels it: a conflicting query adds at most this much lag.
    # Till takes a replica out of rotation well before (TILL_REPLICA_MAX_LAG_MS, 2 s).
    name  = "max_standby_streaming_delay"
    value = tostring(var.read_replica_max_standby_delay_ms)
  }
  parameter {
    # The same bound while the replica catches up from archived WAL instead of the stream.
    name  = "max_standby_archive_delay"
    value = tostring(var.read_replica_max_standby_delay_ms)
  }
}

resource "aws_db_instance" "replica" {
  count               = var.read_replica_count
  identifier          = "till-${var.environment}-replica-${count.index}"
  replicate_source_db = aws_db_instance.main.identifier
  # At least the primary's size: a smaller replica falls behind under write bursts.
  instance_class = coalesce(var.read_replica_instance_class, var.db_instance_class)
  # One per zone in turn, so losing a zone leaves the others' replicas.
  availability_zone                   = var.availability_zones[count.index % length(var.availability_zones)]
  max_allocated_storage               = var.db_allocated_storage * 5
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.till.arn
  multi_az                            = false
  vpc_security_group_ids              = [aws_security_group.db.id]
  parameter_group_name                = aws_db_parameter_group.replica[0].name
  publicly_accessible                 = false
  backup_retention_period             = 0
  deletion_protection                 = false
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.till.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  # RDS takes no final snapshot of a read replica.
  skip_final_snapshot = true
  ca_cert_identifier  = var.db_ca_cert_identifier
}
