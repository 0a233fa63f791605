# Secrets Manager entries Till reads (through the External Secrets Operator, with the
# IRSA role below). Values are set out of band (`aws secretsmanager put-secret-value`),
# never in Terraform state.
resource "aws_secretsmanager_secret" "app" {
  for_each                = toset(["database-url", "jwt-secret", "payment-webhook-secret"])
  name                    = "till/${var.environment}/${each.key}"
  kms_key_id              = aws_kms_key.till.arn
  recovery_window_in_days = 7
}
