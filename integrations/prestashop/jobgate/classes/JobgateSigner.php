<?php
/**
 * Standard Webhooks signing (https://www.standardwebhooks.com), PHP 7.2+, no dependencies.
 *
 * Signed content: "{webhook-id}.{webhook-timestamp}.{raw body}", HMAC-SHA256 keyed with the
 * base64-decoded part of a "whsec_..." secret, sent as "v1,<base64>". During a rotation the
 * shop can hold two secrets and send both signatures, space-separated.
 */
class JobgateSigner
{
    const PREFIX = 'whsec_';

    /**
     * @param string $secret whsec_... (prefix optional)
     * @return string the raw HMAC key
     * @throws InvalidArgumentException
     */
    public static function decodeSecret($secret)
    {
        $secret = trim((string) $secret);
        if (strpos($secret, self::PREFIX) === 0) {
            $secret = substr($secret, strlen(self::PREFIX));
        }
        $padded = $secret . str_repeat('=', (4 - strlen($secret) % 4) % 4);
        $key = base64_decode($padded, true);
        if ($secret === '' || $key === false || $key === '') {
            throw new InvalidArgumentException('the webhook secret must be whsec_ followed by base64');
        }
        return $key;
    }

    /**
     * @return string "v1,<base64 signature>"
     */
    public static function sign($secret, $messageId, $timestamp, $body)
    {
        $signed = $messageId . '.' . (int) $timestamp . '.' . $body;
        $mac = hash_hmac('sha256', $signed, self::decodeSecret($secret), true);
        return 'v1,' . base64_encode($mac);
    }

    /**
     * Headers for one delivery, signed with every secret given (rotation).
     *
     * @param string[] $secrets
     * @return array<string, string>
     */
    public static function headers(array $secrets, $messageId, $timestamp, $body)
    {
        $signatures = array();
        foreach ($secrets as $secret) {
            if ($secret !== null && $secret !== '') {
                $signatures[] = self::sign($secret, $messageId, $timestamp, $body);
            }
        }
        return array(
            'webhook-id' => $messageId,
            'webhook-timestamp' => (string) (int) $timestamp,
            'webhook-signature' => implode(' ', $signatures),
            'content-type' => 'application/json',
        );
    }

    /**
     * A unique webhook-id without dots (the signature's field separator).
     */
    public static function newMessageId()
    {
        $random = function_exists('random_bytes') ? random_bytes(12) : openssl_random_pseudo_bytes(12);
        return 'msg_' . bin2hex($random);
    }
}
