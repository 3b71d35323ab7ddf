/** Where the infra tests import it from; the service picks its embedded database's port with the same function. */
export { freePort } from '../../freePort';
