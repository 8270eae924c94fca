<?php
/**
 * The few PrestaShop classes and functions the module uses, so its code runs under php-cli.
 *
 * Each stub keeps the real signature and the behaviour the module relies on:
 * - Db: PrestaShop's insert()/update()/delete() prefix the table and quote values the
 *   caller already escaped with pSQL(); here the database is SQLite (PDO) instead of MySQL,
 *   so escape() uses SQL's quote doubling and execute() translates the MySQL-only parts of
 *   the module's CREATE TABLE (AUTO_INCREMENT, ENGINE, KEY lines).
 * - Configuration: a key/value store (get() returns false for a missing key, like PrestaShop).
 * - Module: install/uninstall/registerHook bookkeeping only.
 * Set JOBGATE_TEST_DB to an SQLite file to share the shop database between php runs.
 */
define('_PS_VERSION_', '8.1.7');
define('_DB_PREFIX_', 'ps_');
define('_MYSQL_ENGINE_', 'InnoDB');

class Db
{
    /** @var Db|null */
    private static $instance;
    /** @var PDO */
    public $pdo;

    public static function getInstance($master = true)
    {
        if (self::$instance === null) {
            self::$instance = new Db();
        }
        return self::$instance;
    }

    private function __construct()
    {
        $path = getenv('JOBGATE_TEST_DB') ?: ':memory:';
        $this->pdo = new PDO('sqlite:' . $path);
        $this->pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
        $this->pdo->exec('CREATE TABLE IF NOT EXISTS ps_configuration (name TEXT PRIMARY KEY, value TEXT)');
    }

    public function execute($sql, $useCache = true)
    {
        $sql = preg_replace('/INT UNSIGNED NOT NULL AUTO_INCREMENT/', 'INTEGER NOT NULL', $sql);
        $sql = preg_replace('/,\s*KEY `[^`]+` \(`[^`]+`\)/', '', $sql);
        $sql = preg_replace('/\)\s*ENGINE=\w+ DEFAULT CHARSET=\w+;?/', ')', $sql);
        $sql = str_replace('PRIMARY KEY (`id_jobgate_event`)', 'PRIMARY KEY (`id_jobgate_event` AUTOINCREMENT)', $sql);
        $this->pdo->exec($sql);
        return true;
    }

    public function executeS($sql, $array = true, $useCache = true)
    {
        return $this->pdo->query($sql)->fetchAll(PDO::FETCH_ASSOC);
    }

    public function getValue($sql, $useCache = true)
    {
        $row = $this->pdo->query($sql)->fetch(PDO::FETCH_NUM);
        return $row === false ? false : $row[0];
    }

    public function insert($table, $data, $nullValues = false, $useCache = true, $type = 1, $addPrefix = true)
    {
        $table = ($addPrefix ? _DB_PREFIX_ : '') . $table;
        $columns = '`' . implode('`, `', array_keys($data)) . '`';
        $values = array();
        foreach ($data as $value) {
            $values[] = "'" . $value . "'";
        }
        return $this->pdo->exec("INSERT INTO `$table` ($columns) VALUES (" . implode(', ', $values) . ')') !== false;
    }

    public function update($table, $data, $where = '', $limit = 0, $nullValues = false, $useCache = true, $addPrefix = true)
    {
        $table = ($addPrefix ? _DB_PREFIX_ : '') . $table;
        $sets = array();
        foreach ($data as $key => $value) {
            $sets[] = "`$key` = '" . $value . "'";
        }
        return $this->pdo->exec("UPDATE `$table` SET " . implode(', ', $sets) . ($where ? " WHERE $where" : '')) !== false;
    }

    public function delete($table, $where = '', $limit = 0, $useCache = true, $addPrefix = true)
    {
        $table = ($addPrefix ? _DB_PREFIX_ : '') . $table;
        return $this->pdo->exec("DELETE FROM `$table`" . ($where ? " WHERE $where" : '')) !== false;
    }

    public function Insert_ID()
    {
        return (int) $this->pdo->lastInsertId();
    }

    public function escape($string, $htmlOK = false)
    {
        $string = (string) $string;
        if (!$htmlOK) {
            $string = strip_tags($string);
        }
        return str_replace("'", "''", $string);
    }
}

function pSQL($string, $htmlOK = false)
{
    return Db::getInstance()->escape($string, $htmlOK);
}

class Configuration
{
    public static function get($key, $idLang = null, $idShopGroup = null, $idShop = null, $default = false)
    {
        $stmt = Db::getInstance()->pdo->prepare('SELECT value FROM ps_configuration WHERE name = ?');
        $stmt->execute(array($key));
        $value = $stmt->fetchColumn();
        return $value === false ? $default : $value;
    }

    public static function updateValue($key, $value, $html = false, $idShopGroup = null, $idShop = null)
    {
        $stmt = Db::getInstance()->pdo->prepare('INSERT OR REPLACE INTO ps_configuration (name, value) VALUES (?, ?)');
        return $stmt->execute(array($key, (string) $value));
    }

    public static function deleteByName($key)
    {
        $stmt = Db::getInstance()->pdo->prepare('DELETE FROM ps_configuration WHERE name = ?');
        return $stmt->execute(array($key));
    }
}

class PrestaShopLogger
{
    /** @var array[] */
    public static $logs = array();

    public static function addLog($message, $severity = 1, $errorCode = null, $objectType = null, $objectId = null, $allowDuplicate = false, $idEmployee = null)
    {
        self::$logs[] = array('message' => $message, 'severity' => $severity);
        return true;
    }
}

class Shop
{
    public $id = 1;

    public function getBaseURL($autoSecureMode = false, $addBaseUri = true)
    {
        return 'https://shop.example/';
    }
}

class Link
{
    public function getModuleLink($module, $controller = 'default', array $params = array(), $ssl = null)
    {
        return 'https://shop.example/index.php?' . http_build_query(array_merge(
            array('fc' => 'module', 'module' => $module, 'controller' => $controller),
            $params
        ));
    }
}

class Context
{
    /** @var Context|null */
    private static $instance;
    public $shop;
    public $link;

    public static function getContext()
    {
        if (self::$instance === null) {
            self::$instance = new Context();
            self::$instance->shop = new Shop();
            self::$instance->link = new Link();
        }
        return self::$instance;
    }
}

class Tools
{
    /** @var array<string, mixed> the submitted form */
    public static $submitted = array();

    public static function getValue($key, $default = false)
    {
        return array_key_exists($key, self::$submitted) ? self::$submitted[$key] : $default;
    }

    public static function isSubmit($name)
    {
        return array_key_exists($name, self::$submitted);
    }

    public static function getAdminTokenLite($tab, $context = null)
    {
        return 'token';
    }
}

abstract class Module
{
    public $id = 1;
    public $name;
    public $context;
    /** @var string[] */
    public $registeredHooks = array();

    public function __construct()
    {
        $this->context = Context::getContext();
    }

    public function install()
    {
        return true;
    }

    public function uninstall()
    {
        return true;
    }

    public function registerHook($hookName, $shopList = null)
    {
        foreach ((array) $hookName as $hook) {
            $this->registeredHooks[] = $hook;
        }
        return true;
    }

    public function l($string, $specific = false, $locale = null)
    {
        return $string;
    }

    public function displayConfirmation($string)
    {
        return '<div class="alert alert-success">' . $string . '</div>';
    }

    public function displayError($error)
    {
        return '<div class="alert alert-danger">' . $error . '</div>';
    }
}

class AdminController
{
    public static $currentIndex = 'index.php?controller=AdminModules';
}

/**
 * PrestaShop renders the form with Smarty from `fields_value`; this renders the same values
 * as plain inputs so a test sees exactly what the page would contain.
 */
class HelperForm
{
    public $module;
    public $name_controller;
    public $token;
    public $currentIndex;
    public $submit_action;
    /** @var array<string, mixed> */
    public $fields_value = array();

    public function generateForm($fieldsForm)
    {
        $html = '<form action="' . htmlspecialchars($this->currentIndex, ENT_QUOTES) . '">';
        foreach ($fieldsForm as $form) {
            foreach ($form['form']['input'] as $input) {
                $value = isset($this->fields_value[$input['name']]) ? $this->fields_value[$input['name']] : '';
                $html .= '<label>' . htmlspecialchars($input['label'], ENT_QUOTES) . '</label>'
                    . '<input type="' . $input['type'] . '" name="' . $input['name'] . '" value="'
                    . htmlspecialchars((string) $value, ENT_QUOTES) . '">';
            }
            foreach (isset($form['form']['buttons']) ? $form['form']['buttons'] : array() as $button) {
                $html .= '<button type="submit" name="' . $button['name'] . '">' . htmlspecialchars($button['title'], ENT_QUOTES) . '</button>';
            }
            $html .= '<button type="submit" name="' . $this->submit_action . '">' . $form['form']['submit']['title'] . '</button>';
        }
        return $html . '</form>';
    }
}

class OrderStub
{
    public $id;
    public $reference;
    public $current_state;

    public function __construct($id, $reference, $state)
    {
        $this->id = $id;
        $this->reference = $reference;
        $this->current_state = $state;
    }
}
