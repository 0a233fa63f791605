output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.main.name
}

output "ecr_repository_url" {
  description = "Where to push the image."
  value       = aws_ecr_repository.till.repository_url
}

output "db_endpoint" {
  description = "RDS endpoint (host:port) for DATABASE_URL."
  value       = aws_db_instance.main.endpoint
}

output "db_replica_endpoints" {
  description = "RDS read replica endpoints (host:port), in order, for TILL_READ_DATABASE_URLS (empty without replicas)."
  value       = aws_db_instance.replica[*].endpoint
}

output "db_master_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed master password."
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "app_role_arn" {
  description = "IAM role for the till service account (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.app.arn
}
