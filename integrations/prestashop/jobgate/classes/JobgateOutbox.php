<?php
/**
 * The module's event table: hooks write here inside the shop's request (one fast INSERT),
 * and a sender delivers rows later: after the response (PHP-FPM) or from the cron controller.
 *
 * A row keeps its webhook-id for life, so a retry (or two senders racing on one row) is a
 * replay at the gateway, never a second job. Failed rows wait with exponential backoff; rows
 * the gateway refused for good (4xx) or that failed MAX_ATTEMPTS times are kept with
 * `failed = 1` for the shop owner to see, and are no longer sent.
 */
class JobgateOutbox
{
    const TABLE = 'jobgate_event';
    const MAX_ATTEMPTS = 20;
    const MAX_BACKOFF_S = 21600;

    /** @return string the CREATE TABLE statement run by install() */
    public static function createTableSql()
    {
        return 'CREATE TABLE IF NOT EXISTS `' . _DB_PREFIX_ . self::TABLE . '` (
            `id_jobgate_event` INT UNSIGNED NOT NULL AUTO_INCREMENT,
            `message_id` VARCHAR(64) NOT NULL,
            `body` TEXT NOT NULL,
            `attempts` INT UNSIGNED NOT NULL DEFAULT 0,
            `next_attempt_at` INT UNSIGNED NOT NULL DEFAULT 0,
            `failed` TINYINT(1) NOT NULL DEFAULT 0,
            `last_status` INT NOT NULL DEFAULT 0,
            `date_add` DATETIME NOT NULL,
            PRIMARY KEY (`id_jobgate_event`),
            KEY `next_attempt_at` (`next_attempt_at`)
        ) ENGINE=' . _MYSQL_ENGINE_ . ' DEFAULT CHARSET=utf8mb4;';
    }

    /** @return string the DROP TABLE statement run by uninstall() */
    public static function dropTableSql()
    {
        return 'DROP TABLE IF EXISTS `' . _DB_PREFIX_ . self::TABLE . '`';
    }

    /**
     * Store one event; returns its row id (0 when the insert failed).
     */
    public function add($messageId, $body)
    {
        $db = Db::getInstance();
        $ok = $db->insert(self::TABLE, array(
            'message_id' => pSQL($messageId),
            'body' => pSQL($body, true),
            'attempts' => 0,
            'next_attempt_at' => 0,
            'failed' => 0,
            'last_status' => 0,
            'date_add' => date('Y-m-d H:i:s'),
        ));
        return $ok ? (int) $db->Insert_ID() : 0;
    }

    /**
     * Rows due now, oldest first, at most $limit (a bounded batch per run).
     *
     * @return array[]
     */
    public function due($limit, $now)
    {
        $rows = Db::getInstance()->executeS('SELECT * FROM `' . _DB_PREFIX_ . self::TABLE . '`'
            . ' WHERE `failed` = 0 AND `next_attempt_at` <= ' . (int) $now
            . ' ORDER BY `id_jobgate_event` LIMIT ' . (int) $limit);
        return is_array($rows) ? $rows : array();
    }

    /**
     * @param int[] $ids
     * @return array[]
     */
    public function byIds(array $ids)
    {
        $ids = array_filter(array_map('intval', $ids));
        if (!$ids) {
            return array();
        }
        $rows = Db::getInstance()->executeS('SELECT * FROM `' . _DB_PREFIX_ . self::TABLE . '`'
            . ' WHERE `failed` = 0 AND `id_jobgate_event` IN (' . implode(',', $ids) . ')'
            . ' ORDER BY `id_jobgate_event`');
        return is_array($rows) ? $rows : array();
    }

    public function delivered(array $row)
    {
        Db::getInstance()->delete(self::TABLE, '`id_jobgate_event` = ' . (int) $row['id_jobgate_event']);
    }

    /**
     * A failed attempt: back off (1 min, 2 min, 4 min, ... capped at 6 h), or give up.
     */
    public function attemptFailed(array $row, $status, $now)
    {
        $attempts = (int) $row['attempts'] + 1;
        $failed = JobgateClient::permanent($status) || $attempts >= self::MAX_ATTEMPTS;
        $delay = min(self::MAX_BACKOFF_S, 60 * (1 << min($attempts - 1, 9)));
        Db::getInstance()->update(self::TABLE, array(
            'attempts' => $attempts,
            'next_attempt_at' => (int) $now + $delay,
            'failed' => $failed ? 1 : 0,
            'last_status' => (int) $status,
        ), '`id_jobgate_event` = ' . (int) $row['id_jobgate_event']);
        return $failed;
    }

    /** @return int events still to be sent */
    public function countUnsent()
    {
        return (int) Db::getInstance()->getValue('SELECT COUNT(*) FROM `' . _DB_PREFIX_ . self::TABLE . '` WHERE `failed` = 0');
    }

    /** @return int events given up on (refused by the gateway or out of attempts) */
    public function countFailed()
    {
        return (int) Db::getInstance()->getValue('SELECT COUNT(*) FROM `' . _DB_PREFIX_ . self::TABLE . '` WHERE `failed` = 1');
    }
}
