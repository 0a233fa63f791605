# Secrets Manager entries Till reads (through the External Secrets Operator, with the
# IRSA role below). Values are set out of band (`aws secretsmanager put-secret-value`),
# never in Terraform state. `read-database-urls` (TILL_READ_DATABASE_URLS: the read
# replicas' URLs, comma-separated) exists only with read_replica_count > 0.
resource "aws_secretsmanager_secret" "app" {
  for_each = toset(concat(
    ["database-url", "jwt-secret", "payment-webhook-secret"],
    var.read_replica_count > 0 ? ["read-database-urls"] : [],
  ))
  name                    = "till/${var.environment}/${each.key}"
  kms_key_id              = aws_kms_key.till.arn
  recovery_window_in_days = 7
}
