// Prints schema.graphql without Query.products: a breaking change nobody announced, for
// the check to prove it fails on one (scripts/schema-contract.sh).
import { readFileSync } from 'node:fs';
import { buildSchema, printSchema, GraphQLSchema } from 'graphql';

const schema = buildSchema(readFileSync(process.argv[2], 'utf8'));
const config = schema.toConfig();
const query = config.query.toConfig();
delete query.fields.products;
const Query = new (config.query.constructor)(query);
config.types = config.types.map((t) => (t.name === 'Query' ? Query : t));
console.log(printSchema(new GraphQLSchema({ ...config, query: Query })));
