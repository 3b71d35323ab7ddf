/** Tests build Stripe objects and sign deliveries with the project's local Stripe (localStripe/). */
export * from '../../../localStripe/objects';
export * from '../../../localStripe/signing';
