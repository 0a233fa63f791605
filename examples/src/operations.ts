// The operations the examples run. Codegen turns each into a typed document, and puts
// its normalized text and sha256 in src/gql/persisted-documents.json.
import { graphql } from './gql/index.js';

export const SignIn = graphql(`
  mutation SignIn($email: String!, $password: String!) {
    login(input: { email: $email, password: $password }) {
      accessToken
      refreshToken
      expiresIn
    }
  }
`);

export const Refresh = graphql(`
  mutation Refresh($refreshToken: String!) {
    refreshToken(input: { refreshToken: $refreshToken }) {
      accessToken
      refreshToken
      expiresIn
    }
  }
`);

export const InStock = graphql(`
  query InStock($first: Int!) {
    products(first: $first, sortBy: PRICE, filter: { inStock: true }) {
      edges {
        node {
          id
          sku
          name
          available
          price {
            amount
            currency
          }
        }
      }
    }
  }
`);

export const PlaceOrder = graphql(`
  mutation PlaceOrder($product: ID!, $quantity: Int!) {
    placeOrder(input: { lines: [{ productId: $product, quantity: $quantity }] }) {
      orderId
      consistencyToken
    }
  }
`);

export const MyOrders = graphql(`
  query MyOrders {
    myOrders(first: 5) {
      edges {
        node {
          id
          status
          total {
            amount
          }
        }
      }
    }
  }
`);

export const StockChanged = graphql(`
  subscription StockChanged($product: ID!) {
    stockChanged(productId: $product) {
      sku
      available
    }
  }
`);
