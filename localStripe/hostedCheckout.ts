/**
 * A stand-in for Stripe's hosted Checkout page, at each open session's `url` (`/c/pay/<session id>`): what
 * the session sells and three buttons. Pay completes it paid; Decline answers as a declined card does (the
 * session stays open, another try is possible); Pay later completes a one-off purchase with a delayed
 * payment method, whose payment then arrives or fails with the buttons of the page shown afterwards. Each
 * outcome emits the events Stripe emits for it (commerce.ts). After paying, the buyer is sent to the
 * session's success_url, as Stripe does.
 */
import type http from 'node:http';
import type Stripe from 'stripe';
import type { CheckoutOutcome, DelayedPaymentOutcome, LocalCommerce } from './commerce';

export const HOSTED_CHECKOUT_PATH = '/c/pay/';
const MAX_FORM_BYTES = 1024;

export function isHostedCheckoutPath(pathname: string): boolean {
  return pathname.startsWith(HOSTED_CHECKOUT_PATH);
}

export async function serveHostedCheckout(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, commerce: LocalCommerce): Promise<void> {
  const sessionId = decodeURIComponent(pathname.slice(HOSTED_CHECKOUT_PATH.length));
  const stored = commerce.hostedSession(sessionId);
  if (!stored) return page(res, 404, 'Checkout session not found', `<p>There is no Checkout session ${escape(sessionId)} in this local Stripe.</p>`);
  if (req.method === 'GET') return page(res, 200, title(stored.session), body(stored.session, stored.lineItems));
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'GET, POST' }).end();
    return;
  }
  const action = new URLSearchParams(await readForm(req)).get('action') ?? '';
  try {
    if (action === 'pay' || action === 'decline' || action === 'pay_later') {
      const session = commerce.completeCheckout(sessionId, action satisfies CheckoutOutcome);
      if (action === 'decline') return page(res, 402, title(session), body(session, stored.lineItems, 'Your card was declined. Try again, or use another card.'));
      return redirect(res, session.success_url!.replaceAll('{CHECKOUT_SESSION_ID}', session.id));
    }
    if (action === 'succeeded' || action === 'failed') {
      const session = commerce.settleDelayedPayment(sessionId, action satisfies DelayedPaymentOutcome);
      return page(res, 200, title(session), body(session, stored.lineItems, action === 'succeeded' ? 'The payment arrived.' : 'The payment failed.'));
    }
  } catch (error) {
    return page(res, 409, title(stored.session), body(stored.session, stored.lineItems, (error as Error).message));
  }
  return page(res, 400, title(stored.session), body(stored.session, stored.lineItems, `Unknown action "${action}".`));
}

function title(session: Stripe.Checkout.Session): string {
  return session.mode === 'subscription' ? 'Subscribe' : 'Pay';
}

function money(amount: number | null, currency: string | null): string {
  return `${((amount ?? 0) / 100).toFixed(2)} ${(currency ?? '').toUpperCase()}`;
}

function body(session: Stripe.Checkout.Session, items: Stripe.LineItem[], notice?: string): string {
  const lines = items
    .map((item) => `<li>${escape(item.description ?? item.price?.id ?? 'Item')} × ${item.quantity ?? 1}: ${money(item.amount_total, item.currency)}${session.mode === 'subscription' ? ' per month' : ''}</li>`)
    .join('');
  const mode = session.livemode ? 'live mode' : 'test mode';
  let actions: string;
  if (session.status === 'open') {
    actions = [
      button('pay', session.mode === 'subscription' ? 'Subscribe' : 'Pay'),
      button('decline', 'Decline'),
      session.mode === 'payment' ? button('pay_later', 'Pay later') : '',
    ].join('');
    if (session.cancel_url) actions += `<p><a href="${escape(session.cancel_url)}">Cancel and go back</a></p>`;
  } else if (session.status === 'complete' && session.payment_status === 'unpaid') {
    actions = `<p>Paid with a delayed payment method: the payment is on its way.</p>${button('succeeded', 'Payment arrives')}${button('failed', 'Payment fails')}`;
  } else {
    actions = `<p>This session is ${escape(session.status ?? 'closed')}${session.status === 'complete' ? ` (${escape(session.payment_status)})` : ''}.</p>`;
  }
  return `
  <p class="mode">Local Stripe, ${mode}: no money moves.</p>
  <h1>${escape(title(session))} ${money(session.amount_total, session.currency)}</h1>
  <ul>${lines}</ul>
  ${notice ? `<p role="alert">${escape(notice)}</p>` : ''}
  <form method="post">${actions}</form>
  <p class="id">${escape(session.id)}</p>`;
}

function button(action: string, label: string): string {
  return `<button type="submit" name="action" value="${action}">${escape(label)}</button>`;
}

function page(res: http.ServerResponse, status: number, heading: string, content: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(heading)} · Local Stripe Checkout</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 28rem; margin: 2rem auto; padding: 0 1rem; color: #1a1f36; }
  .mode { background: #fff4e5; color: #7a4100; padding: .25rem .5rem; border-radius: 4px; font-size: .875rem; }
  button { display: block; width: 100%; margin: .5rem 0; padding: .75rem; font-size: 1rem; border-radius: 6px; border: 1px solid #635bff; background: #635bff; color: #fff; cursor: pointer; }
  button[value="decline"], button[value="failed"] { background: #fff; color: #635bff; }
  button:focus-visible, a:focus-visible { outline: 3px solid #0a2540; outline-offset: 2px; }
  [role="alert"] { color: #a4000f; }
  .id { color: #697386; font-size: .75rem; word-break: break-all; }
</style></head><body><main>${content}</main></body></html>`);
}

function redirect(res: http.ServerResponse, location: string): void {
  res.writeHead(303, { location, 'cache-control': 'no-store' }).end();
}

function readForm(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > MAX_FORM_BYTES) req.destroy(new Error('form too large'));
    });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}
