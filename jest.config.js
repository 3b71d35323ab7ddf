/** Unit and integration tests: real PostgreSQL, real HTTP, real files. */
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['@swc/jest'] },
  roots: ['<rootDir>/service', '<rootDir>/infra', '<rootDir>/scripts'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '/test/reliability/'],
  testTimeout: 30000,
};
