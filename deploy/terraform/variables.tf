variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-central-1"
}

variable "environment" {
  description = "Environment name, used in resource names (prod, staging)."
  type        = string
  default     = "prod"
}

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Three zones: one public and one private subnet each."
  type        = list(string)
  default     = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
}

variable "kubernetes_version" {
  description = "EKS control plane version."
  type        = string
  default     = "1.31"
}

variable "node_instance_types" {
  description = "Instance types of the managed node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_min" {
  description = "Fewest nodes."
  type        = number
  default     = 3
}

variable "node_max" {
  description = "Most nodes."
  type        = number
  default     = 12
}

variable "api_endpoint_public_cidrs" {
  description = "Who may reach the EKS API endpoint publicly (operators' addresses)."
  type        = list(string)
  default     = ["203.0.113.0/24"]
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m6g.large"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB (autoscaling up to 5x)."
  type        = number
  default     = 100
}

variable "read_replica_count" {
  description = "Streaming read replicas of the RDS instance that `till serve` reads the read models from (0: none, every read on the primary)."
  type        = number
  default     = 0

  validation {
    condition     = var.read_replica_count >= 0 && var.read_replica_count <= 15 && floor(var.read_replica_count) == var.read_replica_count
    error_message = "read_replica_count must be a whole number from 0 to 15 (RDS's limit of read replicas per PostgreSQL instance)."
  }
}

variable "read_replica_instance_class" {
  description = "RDS instance class of the read replicas (null: the primary's, db_instance_class)."
  type        = string
  default     = null
}

variable "read_replica_max_standby_delay_ms" {
  description = "max_standby_streaming_delay (and max_standby_archive_delay) of the read replicas, in ms: how long replay waits for a conflicting query before cancelling it."
  type        = number
  default     = 30000
}

variable "db_statement_timeout_ms" {
  description = "statement_timeout of every session, in ms (Till also sets its own per connection)."
  type        = number
  default     = 15000
}

variable "db_ca_cert_identifier" {
  description = "CA of the RDS server certificate (in the global bundle Till verifies against)."
  type        = string
  default     = "rds-ca-rsa2048-g1"
}

variable "namespace" {
  description = "Kubernetes namespace of Till (for the IRSA trust policy)."
  type        = string
  default     = "till"
}
