/** Unit and integration tests: real PostgreSQL, real HTTP, real files. */
module.exports = {
  testEnvironment: 'node',
  // jose is ESM-only: compile it to CommonJS for jest (Node itself loads it with require(esm)).
  transform: { '^.+\\.(t|j)s$': ['@swc/jest'] },
  transformIgnorePatterns: ['/node_modules/(?!jose/)'],
  roots: ['<rootDir>/service', '<rootDir>/infra', '<rootDir>/scripts', '<rootDir>/localStripe'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '/test/reliability/'],
  testTimeout: 30000,
};
