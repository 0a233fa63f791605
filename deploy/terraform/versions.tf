terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }
  # Configure a remote backend (S3 + DynamoDB lock) per environment:
  #   terraform init -backend-config=backend-prod.hcl
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      Project     = "till"
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
