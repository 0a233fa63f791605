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
